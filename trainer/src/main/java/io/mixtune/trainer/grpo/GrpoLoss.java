package io.mixtune.trainer.grpo;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Activation;
import io.mixtune.model.nn.Scalars;
import io.mixtune.trainer.recipe.GrpoConfig;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A micro-batch's GRPO objective as TRL 1.13's GRPOTrainer._compute_loss computes it, on the completion tokens of its
 * rows laid out flat (row by row, {@link Tokens}). With r = exp(log pi - log pi_old) per token (1, and the gradient of
 * log pi, where the policy sampled them itself: TRL's per_token_logps.detach()), A the row's advantage:
 * grpo/bnpo/dr_grpo/dapo take -min(r A, clip(r, 1 - epsilon, 1 + epsilon_high) A), r first capped at delta where set
 * (INTELLECT-2); cispo -min(r, epsilon_high) A log pi with the capped ratio constant (MiniMax-M1); sapo -4/tau
 * sigmoid(tau (r - 1)) A with tau by A's sign (SAPO). beta > 0 adds beta (exp(ref - log pi) - (ref - log pi) - 1), the
 * k3 estimate of the KL to the reference, times r with use_bias_correction_kl (TRL's default). With
 * importance_sampling_level sequence (GSPO) r is one per completion, exp of the mean of its counted tokens' log-ratios,
 * spread over its tokens (TRL's (B, 1) coef_1 broadcast against (B, T)). The loss types differ in how the token losses
 * are summed: each token's weight ({@link #weights}) carries the whole normalisation, accumulation included, so the
 * objective is their weighted sum.
 */
public final class GrpoLoss {
    private GrpoLoss() {}

    /**
     * A micro-batch's completion tokens, flat (row by row); arrays [tokens] unless said.
     *
     * @param old the log-probs of the policy that sampled them (num_iterations > 1), or null: the policy itself
     * @param reference the reference's log-probs, or null (beta 0)
     * @param advantages each token's row's advantage
     * @param mask whether the token counts (false for a truncated completion with mask_truncated_completions)
     * @param rows each token's row in the micro-batch
     * @param rowCount the micro-batch's rows
     */
    public record Tokens(float[] old, float[] reference, float[] advantages, boolean[] mask, int[] rows,
            int rowCount) {}

    /**
     * How the loss type sums the token losses of one micro-batch of the step's {@code accumulation}
     * (TRL's current_gradient_accumulation_steps), as token weights: grpo and sapo average each row's tokens, then the
     * rows; bnpo averages the micro-batch's tokens; dr_grpo divides by rows x max_completion_length; dapo and cispo by
     * the tokens of the whole generation batch ({@code generationTokens}, TRL's num_items_in_batch), so the step's
     * objective is the mean over all its tokens. Every type but dapo and cispo also divides by accumulation.
     */
    public static float[] weights(GrpoConfig grpo, Tokens tokens, int accumulation, double generationTokens) {
        int n = tokens.mask().length;
        int[] perRow = new int[tokens.rowCount()];
        int counted = 0;
        for (int t = 0; t < n; t++) {
            if (tokens.mask()[t]) {
                perRow[tokens.rows()[t]]++;
                counted++;
            }
        }
        float[] weights = new float[n];
        for (int t = 0; t < n; t++) {
            if (!tokens.mask()[t]) {
                continue;
            }
            double weight = switch (grpo.lossType()) {
                case "grpo", "sapo" -> 1.0 / perRow[tokens.rows()[t]] / tokens.rowCount() / accumulation;
                case "bnpo" -> 1.0 / Math.max(1, counted) / accumulation;
                case "dr_grpo" -> 1.0 / ((double) tokens.rowCount() * grpo.maxCompletionLength()) / accumulation;
                case "dapo", "cispo" -> 1.0 / Math.max(1, generationTokens);
                default -> throw new IllegalStateException("loss_type " + grpo.lossType());
            };
            weights[t] = (float) weight;
        }
        return weights;
    }

    /**
     * @param value the scalar to differentiate: the weighted sum of the token losses
     * @param metrics TRL's kl (beta > 0) and clip_ratio/* (or cispo_clip_ratio) of the micro-batch
     */
    public record Objective(NDArray value, Map<String, Double> metrics) {}

    /**
     * @param policy log pi of every token [tokens], float32, differentiable
     * @param weights {@link #weights}
     */
    public static Objective objective(GrpoConfig grpo, NDArray policy, Tokens tokens, float[] weights,
            NDManager manager) {
        NDManager constants = manager;
        NDArray old = tokens.old() == null ? policy.stopGradient() : constants.create(tokens.old());
        NDArray advantages = constants.create(tokens.advantages());
        NDArray logRatio = policy.sub(old);
        float[] rowRatios = null;
        if (grpo.sequenceLevel()) {
            // TRL: (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0), then broadcast over the row's tokens
            NDArray rowLogRatios = rowMatrix(tokens, true, constants).dot(logRatio.reshape(-1, 1));
            rowRatios = rowLogRatios.exp().reshape(-1).toFloatArray();
            logRatio = spreadMatrix(tokens, constants).dot(rowLogRatios).reshape(-1);
        }
        NDArray ratio = logRatio.exp();
        NDArray perToken;
        switch (grpo.lossType()) {
            case "cispo" -> {
                NDArray capped = ratio.clip(Double.NEGATIVE_INFINITY, grpo.upperEpsilon()).stopGradient();
                perToken = capped.mul(advantages).mul(policy).neg();
            }
            case "sapo" -> {
                float[] temperatures = new float[tokens.advantages().length];
                for (int t = 0; t < temperatures.length; t++) {
                    temperatures[t] = (float) (tokens.advantages()[t] > 0 ? grpo.sapoTemperaturePos()
                            : grpo.sapoTemperatureNeg());
                }
                NDArray tau = constants.create(temperatures);
                NDArray soft = Scalars.times(Activation.sigmoid(tau.mul(ratio.sub(1f))), 4).div(tau);
                perToken = soft.mul(advantages).neg();
            }
            default -> {
                NDArray clipped = ratio.clip(1 - grpo.epsilonLow(), 1 + grpo.upperEpsilon());
                NDArray unclipped = grpo.delta() == null ? ratio : ratio.clip(Double.NEGATIVE_INFINITY, grpo.delta());
                perToken = unclipped.mul(advantages).minimum(clipped.mul(advantages)).neg();
            }
        }
        float[] policyValues = policy.toFloatArray();
        Map<String, Double> metrics = new LinkedHashMap<>();
        if (grpo.beta() != 0) {
            NDArray difference = constants.create(tokens.reference()).sub(policy);
            NDArray kl = difference.exp().sub(difference).sub(1f);
            if (grpo.useBiasCorrectionKl()) {
                kl = kl.mul(ratio);
            }
            perToken = perToken.add(Scalars.times(kl, grpo.beta()));
            metrics.put("kl", maskedMean(kl.toFloatArray(), tokens.mask()));
        }
        NDArray value = perToken.mul(constants.create(weights)).sum();
        if (rowRatios != null) {
            sequenceClipMetrics(grpo, rowRatios, tokens, metrics);
        } else {
            clipMetrics(grpo, policyValues, tokens, metrics);
        }
        return new Objective(value, metrics);
    }

    /**
     * [rows, tokens]: a row's counted tokens each 1 / their count (mean: a row none counts averages to 0, TRL's
     * clamp), or each 1 (the row's masked sum).
     */
    static NDArray rowMatrix(Tokens tokens, boolean mean, NDManager manager) {
        int n = tokens.mask().length;
        int[] counts = new int[tokens.rowCount()];
        for (int t = 0; t < n; t++) {
            counts[tokens.rows()[t]] += tokens.mask()[t] ? 1 : 0;
        }
        float[] matrix = new float[tokens.rowCount() * n];
        for (int t = 0; t < n; t++) {
            if (tokens.mask()[t]) {
                matrix[tokens.rows()[t] * n + t] = mean ? 1f / counts[tokens.rows()[t]] : 1f;
            }
        }
        return manager.create(matrix, new Shape(tokens.rowCount(), n));
    }

    /** [tokens, rows]: each token's row, one-hot (a row's value copied to its tokens). */
    private static NDArray spreadMatrix(Tokens tokens, NDManager manager) {
        int n = tokens.mask().length;
        float[] matrix = new float[n * tokens.rowCount()];
        for (int t = 0; t < n; t++) {
            matrix[t * tokens.rowCount() + tokens.rows()[t]] = 1f;
        }
        return manager.create(matrix, new Shape(n, tokens.rowCount()));
    }

    /**
     * TRL's clip metrics of sequence-level ratios (one per row, coef_1 of shape (B, 1)): its global_masked_mean is then
     * the mean over the micro-batch's rows, every row counted (a masked one too), and masked_seq_mean the row's value.
     */
    private static void sequenceClipMetrics(GrpoConfig grpo, float[] rowRatios, Tokens tokens,
            Map<String, Double> metrics) {
        if (grpo.lossType().equals("sapo")) {
            return;
        }
        float[] rowAdvantages = new float[tokens.rowCount()];
        for (int t = 0; t < tokens.rows().length; t++) {
            rowAdvantages[tokens.rows()[t]] = tokens.advantages()[t];
        }
        double low = 0;
        double high = 0;
        double region = 0;
        double lowMin = Double.POSITIVE_INFINITY;
        double highMax = Double.NEGATIVE_INFINITY;
        for (int r = 0; r < rowRatios.length; r++) {
            float ratio = rowRatios[r];
            if (grpo.delta() != null && !grpo.lossType().equals("cispo")) {
                ratio = (float) Math.min(ratio, grpo.delta());
            }
            if (grpo.lossType().equals("cispo")) {
                high += ratio > grpo.upperEpsilon() && rowAdvantages[r] > 0 ? 1 : 0;
                continue;
            }
            int isLow = ratio < 1 - grpo.epsilonLow() && rowAdvantages[r] < 0 ? 1 : 0;
            int isHigh = ratio > 1 + grpo.upperEpsilon() && rowAdvantages[r] > 0 ? 1 : 0;
            low += isLow;
            high += isHigh;
            region += Math.max(isLow, isHigh);
            lowMin = Math.min(lowMin, isLow);
            highMax = Math.max(highMax, isHigh);
        }
        int rows = Math.max(1, rowRatios.length);
        if (grpo.lossType().equals("cispo")) {
            metrics.put("cispo_clip_ratio", high / rows);
            return;
        }
        metrics.put("clip_ratio/low_mean", low / rows);
        metrics.put("clip_ratio/high_mean", high / rows);
        metrics.put("clip_ratio/region_mean", region / rows);
        metrics.put("clip_ratio/low_min", lowMin);
        metrics.put("clip_ratio/high_max", highMax);
    }

    /** TRL's clip_ratio/* metrics (cispo: cispo_clip_ratio) of the ratios it clipped where the clipping binds. */
    private static void clipMetrics(GrpoConfig grpo, float[] policy, Tokens tokens, Map<String, Double> metrics) {
        if (grpo.lossType().equals("sapo")) {
            return;
        }
        int n = policy.length;
        float[] low = new float[n];
        float[] high = new float[n];
        float[] region = new float[n];
        for (int t = 0; t < n; t++) {
            // float32 as TRL computes the ratio: the comparisons see its rounding
            float ratio = tokens.old() == null ? 1f : (float) Math.exp(policy[t] - tokens.old()[t]);
            // TRL caps coef_1 at delta in the grpo/bnpo/dr_grpo/dapo branch only: cispo's metric sees it uncapped
            if (grpo.delta() != null && !grpo.lossType().equals("cispo")) {
                ratio = (float) Math.min(ratio, grpo.delta());
            }
            float advantage = tokens.advantages()[t];
            if (grpo.lossType().equals("cispo")) {
                high[t] = ratio > grpo.upperEpsilon() && advantage > 0 ? 1 : 0;
                continue;
            }
            low[t] = ratio < 1 - grpo.epsilonLow() && advantage < 0 ? 1 : 0;
            high[t] = ratio > 1 + grpo.upperEpsilon() && advantage > 0 ? 1 : 0;
            region[t] = Math.max(low[t], high[t]);
        }
        if (grpo.lossType().equals("cispo")) {
            metrics.put("cispo_clip_ratio", maskedMean(high, tokens.mask()));
            return;
        }
        metrics.put("clip_ratio/low_mean", maskedMean(low, tokens.mask()));
        metrics.put("clip_ratio/high_mean", maskedMean(high, tokens.mask()));
        metrics.put("clip_ratio/region_mean", maskedMean(region, tokens.mask()));
        metrics.put("clip_ratio/low_min", rowMeans(low, tokens, false));
        metrics.put("clip_ratio/high_max", rowMeans(high, tokens, true));
    }

    /** The mean of the counted tokens' values (TRL's global_masked_mean: 0 where none counts). */
    static double maskedMean(float[] values, boolean[] mask) {
        double sum = 0;
        int count = 0;
        for (int t = 0; t < values.length; t++) {
            if (mask[t]) {
                sum += values[t];
                count++;
            }
        }
        return sum / Math.max(1, count);
    }

    /** The smallest (or largest) row mean of the counted tokens' values, rows without any left out (TRL's nanmin). */
    private static double rowMeans(float[] values, Tokens tokens, boolean largest) {
        double[] sums = new double[tokens.rowCount()];
        int[] counts = new int[tokens.rowCount()];
        for (int t = 0; t < values.length; t++) {
            if (tokens.mask()[t]) {
                sums[tokens.rows()[t]] += values[t];
                counts[tokens.rows()[t]]++;
            }
        }
        double best = Double.NaN;
        for (int r = 0; r < sums.length; r++) {
            if (counts[r] > 0) {
                double mean = sums[r] / counts[r];
                best = Double.isNaN(best) ? mean : largest ? Math.max(best, mean) : Math.min(best, mean);
            }
        }
        return best;
    }
}
