package io.mixtune.trainer.kto;

import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.MicroBatchMeans;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * TRL 1.13 KTOTrainer's metrics under its names, per micro-batch (its _compute_loss): kl (the estimate the loss read,
 * 0 for apo_zero_unpaired), entropy (mean over all completion tokens), logits/chosen and logits/rejected (the mean
 * over the desirable, resp. undesirable, completion tokens of each token's mean logit; only where there are such
 * tokens), rewards/chosen and logps/chosen (beta x log-ratio and the policy's log-prob, summed over the desirable
 * examples and divided by their count; only where there are any), rewards/rejected and logps/rejected alike, and
 * rewards/margins (rewards/chosen - rewards/rejected, where both are). A step or an evaluation logs each name's mean
 * over the micro-batches that logged it, and the loss averaged over examples ({@link MicroBatchMeans}).
 */
public final class KtoMetrics {
    private final double beta;
    private final MicroBatchMeans means = new MicroBatchMeans();

    public KtoMetrics(double beta) {
        this.beta = beta;
    }

    /**
     * Adds one micro-batch.
     *
     * @param policy the policy's completion log-probs per example
     * @param kl the KL estimate its loss read
     * @param loss its objective, the mean over its examples
     * @param statistics the policy's logits at its target tokens, rows in order, or null where not measured
     * @param targetsPerRow each row's target tokens
     */
    public void add(boolean[] labels, float[] policy, float[] reference, float kl, double loss,
            CausalLmLoss.TokenStatistics statistics, int[] targetsPerRow) {
        Map<String, Double> values = new LinkedHashMap<>();
        values.put("kl", (double) kl);
        if (statistics != null) {
            double[] logitSums = new double[2];
            int[] tokens = new int[2];
            double entropySum = 0;
            int token = 0;
            for (int row = 0; row < labels.length; row++) {
                int side = labels[row] ? 0 : 1;
                for (int k = 0; k < targetsPerRow[row]; k++, token++) {
                    logitSums[side] += statistics.meanLogits()[token];
                    entropySum += statistics.entropies()[token];
                    tokens[side]++;
                }
            }
            values.put("entropy", tokens[0] + tokens[1] == 0 ? 0 : entropySum / (tokens[0] + tokens[1]));
            if (tokens[0] > 0) {
                values.put("logits/chosen", logitSums[0] / tokens[0]);
            }
            if (tokens[1] > 0) {
                values.put("logits/rejected", logitSums[1] / tokens[1]);
            }
        }
        double[] rewards = new double[2];
        double[] logps = new double[2];
        int[] count = new int[2];
        for (int i = 0; i < labels.length; i++) {
            int side = labels[i] ? 0 : 1;
            // float32 as TRL computes beta x log-ratio
            rewards[side] += (float) beta * (policy[i] - reference[i]);
            logps[side] += policy[i];
            count[side]++;
        }
        if (count[0] > 0) {
            values.put("rewards/chosen", rewards[0] / count[0]);
            values.put("logps/chosen", logps[0] / count[0]);
        }
        if (count[1] > 0) {
            values.put("rewards/rejected", rewards[1] / count[1]);
            values.put("logps/rejected", logps[1] / count[1]);
        }
        if (count[0] > 0 && count[1] > 0) {
            values.put("rewards/margins", rewards[0] / count[0] - rewards[1] / count[1]);
        }
        means.add(values, loss, labels.length);
    }

    /** The metrics by TRL name, each the mean over the micro-batches that logged it. */
    public Map<String, Double> values() {
        return means.values();
    }

    public double kl() {
        return means.mean("kl");
    }

    /** The loss averaged over examples: eval_loss. */
    public double meanLoss() {
        return means.meanLoss();
    }
}
