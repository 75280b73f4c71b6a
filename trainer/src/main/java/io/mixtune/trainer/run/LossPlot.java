package io.mixtune.trainer.run;

import com.fasterxml.jackson.databind.JsonNode;
import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import javax.imageio.ImageIO;
import org.knowm.xchart.AnnotationLine;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.Styler;
import org.knowm.xchart.style.markers.SeriesMarkers;

/**
 * {@code loss.png}, drawn from metrics.jsonl: above, the train loss per step (faint) under its smoothed curve, and the
 * eval loss at each evaluation, with the weight averages' eval losses when the recipe keeps any; below, the learning
 * rate, on the same steps. The title is the run's name (output_dir's folder). A Stage-DPO run's stages are split by
 * vertical lines, and each stage has its own curves: its losses are measured against its own reference, so a line
 * joining two stages would draw a change that is only the reference's.
 */
public final class LossPlot {
    static final int WIDTH = 900;
    static final int LOSS_HEIGHT = 500;
    static final int LEARNING_RATE_HEIGHT = 250;
    /** Pixels left of both panels' plots, wide enough for "10.35" and "5.0E-6" alike: their steps line up. */
    private static final int Y_AXIS_WIDTH = 84;
    /**
     * TensorBoard's default smoothing weight, and its formula (a debiased exponential moving average, restarted at
     * each stage), so the curve looks as the same run's does in TensorBoard (logging.tensorboard).
     */
    static final double SMOOTHING = 0.6;

    /** metrics.jsonl field, legend label: the eval curves (SFT's weight averages are evaluated beside the weights). */
    private static final Map<String, String> EVAL_SERIES = new LinkedHashMap<>();

    static {
        EVAL_SERIES.put("eval_loss", "eval");
        EVAL_SERIES.put("eval_loss_ema", "eval, EMA");
        EVAL_SERIES.put("eval_loss_swa", "eval, SWA");
        EVAL_SERIES.put("eval_loss_lawa", "eval, LaWA");
    }

    private static final Color RAW = new Color(0x1f, 0x77, 0xb4, 0x55);
    private static final Color SMOOTHED = new Color(0x1f, 0x77, 0xb4);
    private static final Color[] EVAL_COLORS = {new Color(0xff, 0x7f, 0x0e), new Color(0x2c, 0xa0, 0x2c),
        new Color(0xd6, 0x27, 0x28), new Color(0x94, 0x67, 0xbd)};
    private static final Color LEARNING_RATE = new Color(0x55, 0x55, 0x55);
    private static final Color BOUNDARY = new Color(0x99, 0x99, 0x99);

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

    /** The two panels and where stages end (the last step of every stage but the last). */
    record Charts(XYChart loss, XYChart learningRate, List<Long> stageEnds) {}

    /** Writes {@code png} (beside metrics.jsonl, in output_dir); nothing when the metrics hold no loss yet. */
    public static void write(Path metricsFile, Path png) {
        System.setProperty("java.awt.headless", "true");
        Path outputDir = png.toAbsolutePath().getParent();
        Charts charts = charts(MetricsLog.read(metricsFile),
                outputDir.getFileName() == null ? "" : outputDir.getFileName().toString());
        if (charts.loss().getSeriesMap().isEmpty()) {
            return;
        }
        BufferedImage image = new BufferedImage(WIDTH, LOSS_HEIGHT + LEARNING_RATE_HEIGHT, BufferedImage.TYPE_INT_RGB);
        Graphics2D graphics = image.createGraphics();
        graphics.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
        charts.loss().paint(graphics, WIDTH, LOSS_HEIGHT);
        graphics.translate(0, LOSS_HEIGHT);
        charts.learningRate().paint(graphics, WIDTH, LEARNING_RATE_HEIGHT);
        graphics.dispose();
        Path partial = png.resolveSibling(png.getFileName() + ".partial.png");
        try {
            ImageIO.write(image, "png", partial.toFile());
            Files.move(partial, png, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + png + ": " + e.getMessage(), e);
        }
    }

    /**
     * The charts of a run's records. Series names: {@code train}, {@code train, smoothed}, {@code eval},
     * {@code eval, EMA}... and {@code learning rate}; in a run of several stages each is per stage, named with
     * {@code , stage K} appended (only the eval ones in the legend, the train ones once).
     */
    static Charts charts(List<JsonNode> records, String runName) {
        Map<Integer, List<JsonNode>> stages = new LinkedHashMap<>();
        for (JsonNode record : records) {
            stages.computeIfAbsent(record.path("stage").asInt(0), stage -> new ArrayList<>()).add(record);
        }
        boolean staged = stages.size() > 1;
        XYChart loss = chart(runName.isEmpty() ? "loss" : runName, "loss", LOSS_HEIGHT);
        XYChart learningRate = chart(null, "learning rate", LEARNING_RATE_HEIGHT);
        learningRate.getStyler().setYAxisDecimalPattern("0.0E0");
        // The legend inside the loss panel and none below, so both panels' step axes span the same pixels; bottom left,
        // where a falling loss leaves room.
        loss.getStyler().setLegendPosition(Styler.LegendPosition.InsideSW);
        learningRate.getStyler().setLegendVisible(false);
        List<Long> stageEnds = new ArrayList<>();
        boolean first = true;
        int stageIndex = 0;
        for (Map.Entry<Integer, List<JsonNode>> stage : stages.entrySet()) {
            String suffix = staged ? ", stage " + stage.getKey() : "";
            List<Double> steps = new ArrayList<>();
            List<Double> values = new ArrayList<>();
            collect(stage.getValue(), "loss", steps, values);
            if (!steps.isEmpty()) {
                line(loss, "train" + suffix, steps, values, RAW, 1f).setShowInLegend(first).setLabel("train");
                line(loss, "train, smoothed" + suffix, steps, smoothed(values), SMOOTHED, 2f).setShowInLegend(first)
                        .setLabel("train, smoothed");
                first = false;
            }
            // A colour per eval curve; in a staged run (DPO keeps no averages) a colour per stage.
            int color = staged ? stageIndex : 0;
            for (Map.Entry<String, String> eval : EVAL_SERIES.entrySet()) {
                List<Double> evalSteps = new ArrayList<>();
                List<Double> evalValues = new ArrayList<>();
                collect(stage.getValue(), eval.getKey(), evalSteps, evalValues);
                if (!evalSteps.isEmpty()) {
                    line(loss, eval.getValue() + suffix, evalSteps, evalValues,
                            EVAL_COLORS[color % EVAL_COLORS.length], 1.5f).setMarker(SeriesMarkers.CIRCLE);
                }
                color++;
            }
            stageIndex++;
            List<Double> lrSteps = new ArrayList<>();
            List<Double> lrValues = new ArrayList<>();
            collect(stage.getValue(), "lr", lrSteps, lrValues);
            if (!lrSteps.isEmpty()) {
                line(learningRate, "learning rate" + suffix, lrSteps, lrValues, LEARNING_RATE, 1.5f)
                        .setShowInLegend(false);
            }
            if (stageEnds.size() < stages.size() - 1) {
                stageEnds.add(stage.getValue().stream().mapToLong(r -> r.path("step").asLong()).max().orElse(0));
            }
        }
        for (long end : stageEnds) {
            loss.addAnnotation(boundary(end));
            learningRate.addAnnotation(boundary(end));
        }
        return new Charts(loss, learningRate, stageEnds);
    }

    /**
     * TensorBoard's scalar smoothing (its {@code resampleAndSmooth}): an exponential moving average with weight
     * {@link #SMOOTHING}, divided by 1 - weight^n so that its first points are not pulled toward 0.
     */
    static List<Double> smoothed(List<Double> values) {
        List<Double> smoothed = new ArrayList<>(values.size());
        double last = 0;
        int counted = 0;
        for (double value : values) {
            if (!Double.isFinite(value)) {
                smoothed.add(value);
                continue;
            }
            last = last * SMOOTHING + (1 - SMOOTHING) * value;
            counted++;
            smoothed.add(last / (1 - Math.pow(SMOOTHING, counted)));
        }
        return smoothed;
    }

    /** Steps are whole numbers: ticks between them get no label, and no tick reads like 1.0E2. */
    static String stepLabel(double step) {
        return step == Math.rint(step) ? Long.toString((long) step) : "";
    }

    private static XYChart chart(String title, String yAxis, int height) {
        XYChart chart = new XYChartBuilder().width(WIDTH).height(height).xAxisTitle("step").yAxisTitle(yAxis).build();
        if (title != null) {
            chart.setTitle(title);
        } else {
            chart.getStyler().setChartTitleVisible(false);
        }
        chart.getStyler().setMarkerSize(6);
        chart.getStyler().setXAxisMin(0.0);
        chart.getStyler().setYAxisLeftWidthHint(Y_AXIS_WIDTH);
        chart.setCustomXAxisTickLabelsFormatter(LossPlot::stepLabel);
        chart.getStyler().setAnnotationLineColor(BOUNDARY);
        chart.getStyler().setAnnotationLineStroke(new BasicStroke(1.5f, BasicStroke.CAP_BUTT, BasicStroke.JOIN_MITER,
                10f, new float[] {6f, 4f}, 0f));
        return chart;
    }

    private static void collect(List<JsonNode> records, String field, List<Double> steps, List<Double> values) {
        for (JsonNode record : records) {
            if (record.has(field) && record.get(field).isNumber()) {
                steps.add(record.get("step").asDouble());
                values.add(record.get(field).asDouble());
            }
        }
    }

    private static XYSeries line(XYChart chart, String name, List<Double> steps, List<Double> values, Color color,
            float width) {
        XYSeries series = chart.addSeries(name, steps, values);
        series.setMarker(SeriesMarkers.NONE);
        series.setLineColor(color);
        series.setMarkerColor(color);
        series.setLineWidth(width);
        return series;
    }

    private static AnnotationLine boundary(long step) {
        return new AnnotationLine(step, true, false);
    }
}
