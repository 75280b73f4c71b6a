package io.mixtune.trainer.dpo;

import static org.junit.jupiter.api.Assertions.assertEquals;

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
        metrics.add(new float[] {-2, -6}, new float[] {-4, -4}, 0.25, 1.0);
        // Micro-batch 2, three pairs, each rejected preferred by 2 nats: rewards -1 and +1... below.
        metrics.add(new float[] {-5, -5, -5, -3, -3, -3}, new float[] {-4, -4, -4, -4, -4, -4}, 1.0, 3.0);
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
}
