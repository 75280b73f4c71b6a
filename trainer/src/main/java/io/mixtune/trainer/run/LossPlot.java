package io.mixtune.trainer.run;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.markers.SeriesMarkers;

/**
 * {@code loss.png}: train loss per step and eval loss at each evaluation, with the weight averages' eval losses when the
 * recipe keeps any, drawn from metrics.jsonl.
 */
public final class LossPlot {
    private LossPlot() {}

    /** The listener that draws output_dir/loss.png from metrics.jsonl when the run ends. */
    public static TrainingListener listener() {
        return new TrainingListener() {
            private Path outputDir;

            @Override
            public void onRunStarted(RunStarted event) {
                outputDir = event.outputDir();
            }

            @Override
            public void onRunFinished(RunFinished event) {
                write(outputDir.resolve(TrainingOutputs.METRICS_FILE), outputDir.resolve(TrainingOutputs.PLOT_FILE));
            }
        };
    }

    public static void write(Path metricsFile, Path png) {
        System.setProperty("java.awt.headless", "true");
        List<JsonNode> records = MetricsLog.read(metricsFile);
        XYChart chart = new XYChartBuilder().width(900).height(500).title("loss").xAxisTitle("step")
                .yAxisTitle("loss").build();
        chart.getStyler().setMarkerSize(6);
        for (String[] series : new String[][] {{"loss", "train"}, {"eval_loss", "eval"},
                {"eval_loss_ema", "eval, EMA"}, {"eval_loss_swa", "eval, SWA"}, {"eval_loss_lawa", "eval, LaWA"}}) {
            List<Double> steps = new ArrayList<>();
            List<Double> values = new ArrayList<>();
            for (JsonNode record : records) {
                if (record.has(series[0])) {
                    steps.add(record.get("step").asDouble());
                    values.add(record.get(series[0]).asDouble());
                }
            }
            if (!steps.isEmpty()) {
                XYSeries line = chart.addSeries(series[1], steps, values);
                line.setMarker(series[1].startsWith("eval") ? SeriesMarkers.CIRCLE : SeriesMarkers.NONE);
            }
        }
        if (chart.getSeriesMap().isEmpty()) {
            return;
        }
        Path partial = png.resolveSibling(png.getFileName() + ".partial.png");
        try {
            BitmapEncoder.saveBitmap(chart, partial.toString(), BitmapEncoder.BitmapFormat.PNG);
            Files.move(partial, png, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + png + ": " + e.getMessage(), e);
        }
    }
}
