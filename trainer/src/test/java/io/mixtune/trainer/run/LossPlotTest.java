package io.mixtune.trainer.run;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.awt.image.BufferedImage;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYSeries;

/** loss.png's content: the curves, per stage, the smoothing, the stage boundaries, the title and step labels. */
class LossPlotTest {
    /** Two DPO stages of 2 steps, each evaluated at its end, as DpoRecipe writes them. */
    private static final List<String> TWO_STAGES = List.of(
            "{\"step\":1,\"stage\":1,\"loss\":4.0,\"lr\":0.0}",
            "{\"step\":2,\"stage\":1,\"loss\":2.0,\"lr\":1.0e-4}",
            "{\"step\":2,\"stage\":1,\"eval_loss\":0.6,\"eval_rewards/accuracies\":0.5}",
            "{\"step\":3,\"stage\":2,\"loss\":0.7,\"lr\":0.0}",
            "{\"step\":4,\"stage\":2,\"loss\":0.5,\"lr\":1.0e-4}",
            "{\"step\":4,\"stage\":2,\"eval_loss\":0.65,\"eval_rewards/accuracies\":0.75}");

    @Test
    void eachStageHasItsOwnCurvesSplitByABoundary(@TempDir Path dir) throws Exception {
        LossPlot.Charts charts = LossPlot.charts(records(dir, TWO_STAGES), "quickstart-dpo");
        XYChart loss = charts.loss();
        assertEquals("quickstart-dpo", loss.getTitle());
        assertEquals(List.of("train, stage 1", "train, smoothed, stage 1", "eval, stage 1", "train, stage 2",
                "train, smoothed, stage 2", "eval, stage 2"), new ArrayList<>(loss.getSeriesMap().keySet()));
        assertPoints(loss.getSeriesMap().get("train, stage 1"), new double[] {1, 2}, new double[] {4, 2});
        // TensorBoard's debiased EMA, weight 0.6: 0.4*4 / 0.4 = 4; (0.6*1.6 + 0.4*2) / (1 - 0.36) = 2.75.
        assertPoints(loss.getSeriesMap().get("train, smoothed, stage 1"), new double[] {1, 2},
                new double[] {4, 2.75});
        // Restarted at the stage: its first point is its loss, not pulled toward stage 1's.
        assertPoints(loss.getSeriesMap().get("train, smoothed, stage 2"), new double[] {3, 4},
                new double[] {0.7, (0.6 * 0.4 * 0.7 + 0.4 * 0.5) / (1 - 0.36)});
        // One point per stage: no eval line joins losses measured against different references.
        assertPoints(loss.getSeriesMap().get("eval, stage 1"), new double[] {2}, new double[] {0.6});
        assertPoints(loss.getSeriesMap().get("eval, stage 2"), new double[] {4}, new double[] {0.65});
        assertTrue(loss.getSeriesMap().get("eval, stage 2").isShowInLegend());
        assertFalse(loss.getSeriesMap().get("train, stage 2").isShowInLegend(), "the train curves' legend: once");
        assertEquals(List.of(2L), charts.stageEnds(), "stage 1 ends at step 2");

        XYChart learningRate = charts.learningRate();
        assertEquals(List.of("learning rate, stage 1", "learning rate, stage 2"),
                new ArrayList<>(learningRate.getSeriesMap().keySet()));
        assertPoints(learningRate.getSeriesMap().get("learning rate, stage 2"), new double[] {3, 4},
                new double[] {0, 1e-4});
    }

    @Test
    void anSftRunHasOneOfEachCurveAndNoBoundary(@TempDir Path dir) throws Exception {
        LossPlot.Charts charts = LossPlot.charts(records(dir, List.of(
                "{\"step\":0,\"eval_loss\":10.4,\"eval_perplexity\":32000.0}",
                "{\"step\":1,\"loss\":10.5,\"lr\":1.0e-3}",
                "{\"step\":2,\"loss\":10.1,\"lr\":2.0e-3}",
                "{\"step\":2,\"eval_loss\":10.0,\"eval_loss_ema\":10.2}")), "quickstart");
        assertEquals(List.of("train", "train, smoothed", "eval", "eval, EMA"),
                new ArrayList<>(charts.loss().getSeriesMap().keySet()));
        assertPoints(charts.loss().getSeriesMap().get("eval"), new double[] {0, 2}, new double[] {10.4, 10.0});
        assertEquals(List.of("learning rate"), new ArrayList<>(charts.learningRate().getSeriesMap().keySet()));
        assertEquals(List.of(), charts.stageEnds());
    }

    @Test
    void stepTicksAreWholeNumbersWrittenOut() {
        assertEquals("100", LossPlot.stepLabel(100.0));
        assertEquals("1200", LossPlot.stepLabel(1200.0));
        assertEquals("", LossPlot.stepLabel(2.5), "no label between two steps");
    }

    @Test
    void thePngStacksTheLearningRateBelowTheLoss(@TempDir Path dir) throws Exception {
        Path out = Files.createDirectories(dir.resolve("my-run"));
        Path metrics = Files.write(out.resolve("metrics.jsonl"), TWO_STAGES);
        LossPlot.write(metrics, out.resolve("loss.png"));
        BufferedImage image = ImageIO.read(out.resolve("loss.png").toFile());
        assertEquals(LossPlot.WIDTH, image.getWidth());
        assertEquals(LossPlot.LOSS_HEIGHT + LossPlot.LEARNING_RATE_HEIGHT, image.getHeight());
        assertFalse(Files.exists(out.resolve("loss.png.partial.png")));
    }

    private static List<JsonNode> records(Path dir, List<String> lines) throws Exception {
        return MetricsLog.read(Files.write(dir.resolve("metrics.jsonl"), lines));
    }

    private static void assertPoints(XYSeries series, double[] steps, double[] values) {
        assertArrayEquals(steps, series.getXData(), 0, series.getName());
        assertArrayEquals(values, series.getYData(), 1e-12, series.getName());
    }
}
