package io.mixtune.trainer.dpo;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import io.mixtune.trainer.run.CausalLmLoss;

import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * DPO's metrics averaged as TRL 1.13 logs them: rewards/* and logps/* are means over each micro-batch's pairs, and a
 * step or an evaluation takes the mean of those, each micro-batch counting the same; eval_loss is the mean over pairs
 * (transformers' evaluation loop weights each batch's loss by its size).
 */
class DpoMetricsTest {
    @Test
    void microBatchesCountTheSameAndTheLossWeighsPairs() {
        DpoMetrics metrics = new DpoMetrics(0.5);
        // Micro-batch 1, one pair: policy chosen -2, rejected -6 against a reference of -4, -4.
        metrics.add(new float[] {-2, -6}, new float[] {-4, -4}, 0.25, 1.0, null);
        // Micro-batch 2, three pairs, each rejected preferred by 2 nats: rewards -1 and +1... below.
        metrics.add(new float[] {-5, -5, -5, -3, -3, -3}, new float[] {-4, -4, -4, -4, -4, -4}, 1.0, 3.0, null);
        Map<String, Double> values = metrics.values();
        // rewards/chosen: batch 1 0.5 x (-2 + 4) = 1; batch 2 0.5 x (-5 + 4) = -0.5; mean of the batches 0.25 (a mean
        // over the 4 pairs would give -0.125).
        assertEquals(0.25, values.get("rewards/chosen"), 1e-12);
        assertEquals((-1.0 + 0.5) / 2, values.get("rewards/rejected"), 1e-12);
        assertEquals((1.0 + 0.0) / 2, values.get("rewards/accuracies"), 1e-12);
        assertEquals((2.0 - 1.0) / 2, values.get("rewards/margins"), 1e-12);
        assertEquals((-2.0 - 5.0) / 2, values.get("logps/chosen"), 1e-12);
        assertEquals((-6.0 - 3.0) / 2, values.get("logps/rejected"), 1e-12);
        assertEquals(2.0, values.get("nll"), 1e-12);
        assertEquals(0.5, metrics.accuracy(), 1e-12);
        assertEquals(0.5, metrics.margin(), 1e-12);
        assertEquals((0.25 * 1 + 1.0 * 3) / 4, metrics.meanLoss(), 1e-12, "eval_loss: the mean over pairs");
    }

    /**
     * TRL's logits/chosen, logits/rejected, entropy and mean_token_accuracy pool a side's completion tokens across
     * the micro-batch (sum over tokens / their count), and a step takes the mean over micro-batches.
     */
    @Test
    void logitMetricsPoolTheTokensOfEachSideAndMicroBatchesCountTheSame() {
        // Two pairs: chosen rows of 1 and 3 tokens, rejected rows of 2 and 0 tokens, in row order.
        int[] targetsPerRow = {1, 3, 2, 0};
        CausalLmLoss.TokenStatistics statistics = new CausalLmLoss.TokenStatistics(
                new float[] {4, 0, 0, 0, -1, -2},
                new float[] {1, 2, 3, 4, 5, 6},
                new boolean[] {true, false, true, false, true, true});
        DpoMetrics.LogitMeans means = DpoMetrics.LogitMeans.of(statistics, targetsPerRow, 2);
        // logits/chosen over the 4 chosen tokens: (4 + 0 + 0 + 0) / 4 = 1 (the mean of the rows' means would be 2)
        assertEquals(1.0, means.chosen(), 1e-12);
        assertEquals(-1.5, means.rejected(), 1e-12);
        assertEquals(21.0 / 6, means.entropy(), 1e-12, "entropy over both sides' tokens");
        assertEquals(2.0 / 4, means.meanTokenAccuracy(), 1e-12, "argmax hits of the chosen tokens only");

        DpoMetrics metrics = new DpoMetrics(0.5);
        metrics.add(new float[] {-2, -6, -2, -6}, new float[] {-4, -4, -4, -4}, 0.25, 1.0, means);
        // A second micro-batch whose rejected side has no token: TRL logs 0 for it.
        metrics.add(new float[] {-2, -6}, new float[] {-4, -4}, 0.25, 1.0, DpoMetrics.LogitMeans.of(
                new CausalLmLoss.TokenStatistics(new float[] {3}, new float[] {0.5f}, new boolean[] {false}),
                new int[] {1, 0}, 1));
        Map<String, Double> values = metrics.values();
        assertEquals((1.0 + 3.0) / 2, values.get("logits/chosen"), 1e-12);
        assertEquals((-1.5 + 0.0) / 2, values.get("logits/rejected"), 1e-12);
        assertEquals((3.5 + 0.5) / 2, values.get("entropy"), 1e-12);
        assertEquals((0.5 + 0.0) / 2, values.get("mean_token_accuracy"), 1e-12);

        DpoMetrics fixedLogProbs = new DpoMetrics(0.5);
        fixedLogProbs.add(new float[] {-2, -6}, new float[] {-4, -4}, 0.25, 1.0, null);
        assertFalse(fixedLogProbs.values().containsKey("logits/chosen"), "no logits, no logits/* keys");
    }
}
