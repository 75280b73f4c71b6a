package io.mixtune.trainer.grpo;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import io.mixtune.trainer.recipe.RlooConfig;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * RLOO (Ahmadian et al. 2024) as TRL 1.13's RLOOTrainer computes it: the advantages of a generation batch
 * (_generate_and_score_completions) and the loss of a micro-batch (_compute_loss). Unlike GRPO the KL to the reference
 * is no loss term but a reward penalty, with the first-order estimate log pi_old - log pi_ref summed over the
 * completion's tokens, and the importance ratio is one per completion, of its summed log-probs.
 */
final class RlooLoss {
    private RlooLoss() {}

    /**
     * Each completion's reward (the weighted sum of its scores, a None counting 0; NaN where none scored it),
     * clamped to reward_clip_range, less beta x its counted tokens' summed log pi_old - log pi_ref, minus the mean of
     * its group's other scorable rewards (TRL's nansum over the group less its own, over the scorable count - 1),
     * optionally normalised over the batch (nanmean, nanstd + 1e-4); a NaN advantage (unscorable, or alone in its
     * group) is 0.
     * Metrics in TRL's order: kl (beta > 0: the token mean of log pi_old - log pi_ref), rewards/NAME/mean and /std,
     * reward and reward_std (of the weighted sums, before clipping and KL), frac_reward_zero_std (of the groups'
     * rewards after them).
     */
    static GroupAdvantages.Result advantages(RlooConfig rloo, double[][] scores, double[] weights, List<String> names,
            float[][] old, float[][] reference, boolean[] counted) {
        int n = scores.length;
        int g = rloo.numGenerations();
        double[] weighted = GroupAdvantages.weightedSums(scores, weights, scores);
        double[] rewards = weighted.clone();
        if (rloo.rewardClipRange() != null) {
            for (int i = 0; i < n; i++) {
                rewards[i] = Math.min(Math.max(rewards[i], rloo.rewardClipRange().get(0)),
                        rloo.rewardClipRange().get(1));
            }
        }
        Map<String, Double> metrics = new LinkedHashMap<>();
        if (rloo.beta() != 0) {
            double klSum = 0;
            long klTokens = 0;
            for (int i = 0; i < n; i++) {
                if (!counted[i]) {
                    continue;
                }
                double kl = 0;
                for (int t = 0; t < old[i].length; t++) {
                    kl += old[i][t] - reference[i][t]; // float32 differences, as TRL's per_token_kl
                }
                rewards[i] -= rloo.beta() * kl;
                klSum += kl;
                klTokens += old[i].length;
            }
            metrics.put("kl", klSum / Math.max(1, klTokens));
        }
        double[] advantages = new double[n];
        int zeroStd = 0;
        for (int start = 0; start < n; start += g) {
            double sum = 0;
            int scorable = 0;
            for (int i = start; i < start + g; i++) {
                if (!Double.isNaN(rewards[i])) {
                    sum += rewards[i];
                    scorable++;
                }
            }
            for (int i = start; i < start + g; i++) {
                // NaN for an unscorable completion, 0 / 0 where it is its group's only scorable one
                advantages[i] = rewards[i] - (sum - rewards[i]) / (scorable - 1);
            }
            zeroStd += Math.abs(GroupAdvantages.nanStd(rewards, start, start + g)) <= 1e-8 ? 1 : 0;
        }
        if (rloo.normalizeAdvantages()) {
            double mean = GroupAdvantages.nanMean(advantages, 0, n);
            double std = GroupAdvantages.nanStd(advantages, 0, n);
            for (int i = 0; i < n; i++) {
                advantages[i] = (advantages[i] - mean) / (std + 1e-4);
            }
        }
        float[] out = new float[n];
        for (int i = 0; i < n; i++) {
            out[i] = Double.isNaN(advantages[i]) ? 0f : (float) advantages[i];
        }
        for (int f = 0; f < weights.length; f++) {
            double[] column = new double[n];
            for (int i = 0; i < n; i++) {
                column[i] = scores[i][f];
            }
            metrics.put("rewards/" + names.get(f) + "/mean", GroupAdvantages.nanMean(column, 0, n));
            metrics.put("rewards/" + names.get(f) + "/std", GroupAdvantages.nanStd(column, 0, n));
        }
        metrics.put("reward", GroupAdvantages.nanMean(weighted, 0, n));
        metrics.put("reward_std", GroupAdvantages.nanStd(weighted, 0, n));
        metrics.put("frac_reward_zero_std", (double) zeroStd / (n / g));
        return new GroupAdvantages.Result(out, metrics);
    }

    /**
     * The micro-batch's mean over its completions of -min(r A, clip(r, 1 - epsilon, 1 + epsilon_high) A), r =
     * exp(log pi - log pi_old) of the completion's counted tokens' summed log-probs (1 where the policy sampled them
     * itself: num_iterations 1), divided by the step's accumulation (transformers' Trainer divides RLOO's loss so).
     * Metrics: TRL's clip_ratio/low_mean, low_min, high_mean, high_max, region_mean over the completions.
     */
    static GrpoLoss.Objective objective(RlooConfig rloo, NDArray policy, GrpoLoss.Tokens tokens, int accumulation,
            NDManager manager) {
        int rows = tokens.rowCount();
        NDArray sums = GrpoLoss.rowMatrix(tokens, false, manager);
        NDArray logProbs = sums.dot(policy.reshape(-1, 1)).reshape(-1);
        NDArray old = rloo.numIterations() > 1 && tokens.old() != null
                ? sums.dot(manager.create(tokens.old()).reshape(-1, 1)).reshape(-1) : logProbs.stopGradient();
        float[] rowAdvantages = new float[rows];
        for (int t = 0; t < tokens.rows().length; t++) {
            rowAdvantages[tokens.rows()[t]] = tokens.advantages()[t];
        }
        NDArray advantages = manager.create(rowAdvantages);
        NDArray ratio = logProbs.sub(old).exp();
        double low = 1 - rloo.epsilon();
        double high = 1 + (rloo.epsilonHigh() != null ? rloo.epsilonHigh() : rloo.epsilon());
        NDArray clipped = ratio.clip(low, high);
        NDArray perCompletion = ratio.mul(advantages).minimum(clipped.mul(advantages)).neg();
        NDArray value = perCompletion.sum().div((float) rows * accumulation);
        float[] ratios = ratio.toFloatArray();
        double[] lows = new double[rows];
        double[] highs = new double[rows];
        double[] regions = new double[rows];
        for (int r = 0; r < rows; r++) {
            lows[r] = ratios[r] < low && rowAdvantages[r] < 0 ? 1 : 0;
            highs[r] = ratios[r] > high && rowAdvantages[r] > 0 ? 1 : 0;
            regions[r] = Math.max(lows[r], highs[r]);
        }
        Map<String, Double> metrics = new LinkedHashMap<>();
        metrics.put("clip_ratio/low_mean", GroupAdvantages.nanMean(lows, 0, rows));
        metrics.put("clip_ratio/low_min", java.util.Arrays.stream(lows).min().orElse(Double.NaN));
        metrics.put("clip_ratio/high_mean", GroupAdvantages.nanMean(highs, 0, rows));
        metrics.put("clip_ratio/high_max", java.util.Arrays.stream(highs).max().orElse(Double.NaN));
        metrics.put("clip_ratio/region_mean", GroupAdvantages.nanMean(regions, 0, rows));
        return new GrpoLoss.Objective(value, metrics);
    }
}
