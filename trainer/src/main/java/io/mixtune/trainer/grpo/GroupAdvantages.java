package io.mixtune.trainer.grpo;

import io.mixtune.trainer.recipe.GrpoConfig;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The advantages of a generation batch as TRL 1.13's GRPOTrainer._generate_and_score_completions computes them from
 * the reward functions' scores (NaN for a None), consecutive blocks of num_generations completions being one prompt's
 * group. sum_then_normalize: each completion's reward is the weighted sum of its scores (a None counting 0; NaN where
 * no function scored it), minus its group's mean, divided by the group's (scale_rewards group) or the batch's (batch)
 * standard deviation + 1e-4, or not divided (none). normalize_then_sum (GDPO): each function's scores normalised within
 * the group first, then summed with the weights and normalised over the batch. Means and standard deviations skip NaN;
 * the standard deviation is the sample one (TRL's nanstd, Bessel-corrected); an advantage that comes out NaN is 0.
 * Also TRL's reward metrics: reward, reward_std, rewards/NAME/mean and /std, frac_reward_zero_std.
 */
public final class GroupAdvantages {
    private GroupAdvantages() {}

    /** @param advantages one per completion; @param metrics TRL's reward metrics, in its order */
    public record Result(float[] advantages, Map<String, Double> metrics) {}

    /**
     * @param scores [completion][function], NaN where a function returned None
     * @param weights one per function
     * @param names the functions' names (rewards/NAME/mean)
     */
    public static Result of(GrpoConfig grpo, double[][] scores, double[] weights, List<String> names) {
        int n = scores.length;
        int k = weights.length;
        int g = grpo.numGenerations();
        double[] weighted = weightedSums(scores, weights, scores);
        double[] advantages = new double[n];
        double[] std = new double[n];
        if (grpo.multiObjectiveAggregation().equals("sum_then_normalize")) {
            double batchStd = nanStd(weighted, 0, n);
            for (int start = 0; start < n; start += g) {
                double mean = nanMean(weighted, start, start + g);
                double groupStd = nanStd(weighted, start, start + g);
                for (int i = start; i < start + g; i++) {
                    std[i] = grpo.scaleRewards().equals("batch") ? batchStd : groupStd;
                    advantages[i] = weighted[i] - mean;
                    if (!grpo.scaleRewards().equals("none")) {
                        advantages[i] /= std[i] + 1e-4;
                    }
                }
            }
        } else {
            double[][] normalised = new double[n][k];
            for (int f = 0; f < k; f++) {
                double[] column = new double[n];
                for (int i = 0; i < n; i++) {
                    column[i] = scores[i][f];
                }
                for (int start = 0; start < n; start += g) {
                    double mean = nanMean(column, start, start + g);
                    double groupStd = nanStd(column, start, start + g);
                    for (int i = start; i < start + g; i++) {
                        normalised[i][f] = (column[i] - mean) / (groupStd + 1e-4);
                    }
                }
            }
            // a score normalised to NaN (its group's nanstd of one value) counts 0: only a completion no function
            // scored is unscorable (TRL's nansum, then rewards[unscorable_mask] = nan)
            double[] rewards = weightedSums(normalised, weights, scores);
            double mean = nanMean(rewards, 0, n);
            double batchStd = nanStd(rewards, 0, n);
            for (int i = 0; i < n; i++) {
                std[i] = batchStd;
                advantages[i] = (rewards[i] - mean) / (batchStd + 1e-4);
            }
        }
        float[] out = new float[n];
        int zeroStd = 0;
        for (int i = 0; i < n; i++) {
            out[i] = Double.isNaN(advantages[i]) ? 0f : (float) advantages[i];
            zeroStd += Math.abs(std[i]) <= 1e-8 ? 1 : 0; // torch.isclose(std, 0): atol 1e-8
        }
        Map<String, Double> metrics = new LinkedHashMap<>();
        for (int f = 0; f < k; f++) {
            double[] column = new double[n];
            for (int i = 0; i < n; i++) {
                column[i] = scores[i][f];
            }
            metrics.put("rewards/" + names.get(f) + "/mean", nanMean(column, 0, n));
            metrics.put("rewards/" + names.get(f) + "/std", nanStd(column, 0, n));
        }
        metrics.put("reward", nanMean(weighted, 0, n));
        metrics.put("reward_std", nanStd(weighted, 0, n));
        metrics.put("frac_reward_zero_std", (double) zeroStd / n);
        return new Result(out, metrics);
    }

    /**
     * Each completion's weighted sum of {@code values}, a NaN value counting 0 (TRL's nansum), NaN where every one of
     * its raw {@code scores} is NaN (TRL's unscorable_mask).
     */
    static double[] weightedSums(double[][] values, double[] weights, double[][] scores) {
        double[] sums = new double[values.length];
        for (int i = 0; i < values.length; i++) {
            for (int f = 0; f < weights.length; f++) {
                sums[i] += Double.isNaN(values[i][f]) ? 0 : values[i][f] * weights[f];
            }
            if (allNaN(scores[i])) {
                sums[i] = Double.NaN;
            }
        }
        return sums;
    }

    private static boolean allNaN(double[] values) {
        for (double value : values) {
            if (!Double.isNaN(value)) {
                return false;
            }
        }
        return true;
    }

    static double nanMean(double[] values, int from, int to) {
        double sum = 0;
        int count = 0;
        for (int i = from; i < to; i++) {
            if (!Double.isNaN(values[i])) {
                sum += values[i];
                count++;
            }
        }
        return count == 0 ? Double.NaN : sum / count;
    }

    /** TRL's nanstd: the mean squared deviation x count / (count - 1); NaN for fewer than two values. */
    static double nanStd(double[] values, int from, int to) {
        double mean = nanMean(values, from, to);
        double sum = 0;
        int count = 0;
        for (int i = from; i < to; i++) {
            if (!Double.isNaN(values[i])) {
                sum += (values[i] - mean) * (values[i] - mean);
                count++;
            }
        }
        return count < 2 ? Double.NaN : Math.sqrt(sum / count * count / (count - 1));
    }
}
