package io.mixtune.trainer.dpo;

import ai.djl.ndarray.NDArray;
import ai.djl.nn.Activation;
import io.mixtune.model.nn.Scalars;
import io.mixtune.trainer.recipe.DpoLossType;
import io.mixtune.trainer.recipe.Recipe;
import java.util.List;

/**
 * The DPO objectives per preference pair, as TRL 1.13's DPOTrainer._compute_loss computes them, from the summed
 * completion log-probabilities of the policy and the reference. With the log-ratios c = policy chosen - reference
 * chosen and r = policy rejected - reference rejected, d = c - r:
 *
 * <ul>
 *   <li>sigmoid (Rafailov et al. 2023): -log sigmoid(beta d);
 *   <li>hinge (SLiC, Zhao et al. 2023): relu(1 - beta d);
 *   <li>ipo (Azar et al. 2023, eq. 17): (d' - 1 / (2 beta))^2 where d' takes each side's log-ratio divided by its
 *       completion length, TRL's normalisation agreed with the IPO authors;
 *   <li>exo_pair (EXO, Ji et al. 2024, eq. 16): KL([sigmoid(beta d), sigmoid(-beta d)] || [1 - eps, eps]);
 *   <li>nca_pair (Chen et al. 2024): -log sigmoid(beta c) - log sigmoid(-beta c) / 2 - log sigmoid(-beta r) / 2;
 *   <li>robust (Chowdhury et al. 2024), with label smoothing eps, the assumed share of flipped labels:
 *       (-(1 - eps) log sigmoid(beta d) + eps log sigmoid(-beta d)) / (1 - 2 eps), unbiased under such flips;
 *   <li>bco_pair (Jung et al. 2024), TRL 1.13's form without a running reward mean: -log sigmoid(beta c) - log
 *       sigmoid(-beta r);
 *   <li>sppo_hard (Wu et al. 2024, winner's probability 1): (c - 1 / (2 beta))^2 + (r + 1 / (2 beta))^2;
 *   <li>aot (Melnyk et al. 2024): the micro-batch's policy log-ratios (policy chosen - policy rejected) and reference
 *       log-ratios each sorted, delta the difference of the sorted ones, -(1 - eps) log sigmoid(beta delta) - eps log
 *       sigmoid(-beta delta) per sorted position; aot_unpaired sorts c and r instead;
 *   <li>apo_zero (D'Oosterlinck et al. 2024, eq. 7): 1 - sigmoid(beta c) + sigmoid(beta r); apo_down (eq. 8):
 *       sigmoid(beta c) + 1 - sigmoid(beta d);
 *   <li>discopop (Chris Lu et al. 2024, eq. 5): with x = beta d and m = sigmoid(x / tau), -log sigmoid(x) (1 - m) +
 *       exp(-x) m;
 *   <li>sigmoid_norm: sigmoid on d', ipo's length-normalised d.
 * </ul>
 *
 * With an f_divergence_type other than reverse KL (f-DPO), the losses built on d (sigmoid, hinge, ipo, exo_pair, robust,
 * discopop, sigmoid_norm) read each side's score f'(e^ratio) in place of its log-ratio, as TRL's delta_score.
 * Several losses add up with their weights (TRL's loss_weights), and with use_weighting (WPO) each pair's sum is
 * weighted by the policy's length-normalised probabilities of its two answers ({@link DpoStep}). Reference-free DPO passes zeros as the reference
 * log-probabilities. The arrays are float32 [pairs]; every constant goes through {@link Scalars} because autograd
 * differentiates through all of this.
 */
public final class DpoLoss {
    /** TRL's float32 bound on alpha_divergence's exponent, keeping e^x finite. */
    private static final float ALPHA_DIVERGENCE_CLAMP = 80f;

    private DpoLoss() {}

    /**
     * A micro-batch's DPO objective.
     *
     * @param perPair the weighted losses of each pair (of each sorted position for aot), [pairs]
     * @param nll mean negative log-likelihood of the chosen completion tokens, a scalar
     * @param value the mean of perPair, plus sft_weight x nll where sft_weight > 0 (TRL's sft loss type)
     */
    public record Objective(NDArray perPair, NDArray nll, NDArray value) {}

    /**
     * The objective of a micro-batch from its sequence log-probs.
     *
     * @param chosenLengths completion tokens of each chosen answer (read by ipo and sigmoid_norm)
     * @param chosenTargets the chosen completion tokens of the micro-batch, the NLL's denominator
     */
    public static Objective objective(Recipe.Dpo dpo, NDArray policyChosen, NDArray policyRejected,
            NDArray referenceChosen, NDArray referenceRejected, NDArray chosenLengths, NDArray rejectedLengths,
            int chosenTargets) {
        return objective(dpo, policyChosen, policyRejected, referenceChosen, referenceRejected, chosenLengths,
                rejectedLengths, policyChosen, chosenTargets, null);
    }

    /**
     * @param chosenTokens the log-probs whose sum the NLL reads: the chosen completion tokens' (policyChosen, unless
     *     ld_alpha weighs some of them in it)
     * @param pairWeights WPO's weight of each pair (use_weighting), [pairs] without gradient, or null
     */
    public static Objective objective(Recipe.Dpo dpo, NDArray policyChosen, NDArray policyRejected,
            NDArray referenceChosen, NDArray referenceRejected, NDArray chosenLengths, NDArray rejectedLengths,
            NDArray chosenTokens, int chosenTargets, NDArray pairWeights) {
        NDArray perPair = perPair(dpo, policyChosen, policyRejected, referenceChosen, referenceRejected,
                chosenLengths, rejectedLengths);
        if (pairWeights != null) {
            perPair = perPair.mul(pairWeights);
        }
        NDArray value = perPair.mean();
        NDArray nll = Scalars.dividedBy(chosenTokens.sum().neg(), Math.max(1, chosenTargets));
        if (dpo.sftWeight() > 0) {
            value = value.add(Scalars.times(nll, dpo.sftWeight()));
        }
        return new Objective(perPair, nll, value);
    }

    /** The loss of each pair, [pairs]: the loss types' per-pair losses times their weights, summed. */
    public static NDArray perPair(Recipe.Dpo dpo, NDArray policyChosen, NDArray policyRejected,
            NDArray referenceChosen, NDArray referenceRejected, NDArray chosenLengths, NDArray rejectedLengths) {
        NDArray chosenRatio = policyChosen.sub(referenceChosen);
        NDArray rejectedRatio = policyRejected.sub(referenceRejected);
        Ratios ratios = new Ratios(chosenRatio, rejectedRatio, fDivergenceScore(dpo, chosenRatio),
                fDivergenceScore(dpo, rejectedRatio));
        List<DpoLossType> types = dpo.lossTypes();
        List<Double> weights = dpo.weights();
        NDArray sum = null;
        for (int i = 0; i < types.size(); i++) {
            NDArray loss = types.get(i) == DpoLossType.AOT
                    ? aot(sorted(policyChosen.sub(policyRejected)), sorted(referenceChosen.sub(referenceRejected)),
                            dpo)
                    : perPair(types.get(i), dpo, ratios, chosenLengths, rejectedLengths);
            // One loss of weight 1 is its own array, as before loss_weights existed.
            NDArray weighted = weights.get(i) == 1 ? loss : Scalars.times(loss, weights.get(i));
            sum = sum == null ? weighted : sum.add(weighted);
        }
        return sum;
    }

    /**
     * Each side's log-ratio, and its f-divergence score f'(e^ratio) (the ratio itself for reverse KL): TRL's
     * chosen_scores and rejected_scores, which the losses built on their difference read in place of the ratios.
     */
    private record Ratios(NDArray chosen, NDArray rejected, NDArray chosenScore, NDArray rejectedScore) {}

    /**
     * f'(e^u) of a log-ratio u as TRL 1.13 computes it: u (reverse_kl), 1 - e^-u (forward_kl), log 2 + log sigmoid(u)
     * (js_divergence), (e^min((alpha - 1) u, 80) - 1) / (alpha - 1) (alpha_divergence; u where |alpha - 1| < 1e-6, the
     * limit).
     */
    static NDArray fDivergenceScore(Recipe.Dpo dpo, NDArray ratio) {
        return switch (dpo.fDivergenceType()) {
            case Recipe.Dpo.REVERSE_KL -> ratio;
            case Recipe.Dpo.FORWARD_KL -> ratio.neg().exp().neg().add(1);
            case Recipe.Dpo.JS_DIVERGENCE -> logSigmoid(ratio).add(Math.log(2));
            case Recipe.Dpo.ALPHA_DIVERGENCE -> {
                double alpha = dpo.fAlphaDivergenceCoef();
                if (Math.abs(alpha - 1) < 1e-6) {
                    yield ratio;
                }
                NDArray exponent = Scalars.times(ratio, alpha - 1).minimum(ALPHA_DIVERGENCE_CLAMP);
                yield Scalars.times(exponent.exp().sub(1), 1 / (alpha - 1));
            }
            default -> throw new IllegalArgumentException("f_divergence_type: " + dpo.fDivergenceType());
        };
    }

    /** A paired loss from the log-ratios (aot's is {@link #aot}). */
    private static NDArray perPair(DpoLossType type, Recipe.Dpo dpo, Ratios ratios, NDArray chosenLengths,
            NDArray rejectedLengths) {
        double beta = dpo.beta();
        double eps = dpo.labelSmoothing();
        NDArray chosenRatio = ratios.chosen();
        NDArray rejectedRatio = ratios.rejected();
        // The losses built on the chosen - rejected difference read the f-divergence scores (TRL's delta_score).
        NDArray chosenScore = ratios.chosenScore();
        NDArray rejectedScore = ratios.rejectedScore();
        return switch (type) {
            case IPO -> chosenScore.div(chosenLengths).sub(rejectedScore.div(rejectedLengths))
                    .sub(1 / (2 * beta)).square();
            case HINGE -> Activation.relu(Scalars.times(chosenScore.sub(rejectedScore), -beta).add(1));
            case SIGMOID -> logSigmoid(Scalars.times(chosenScore.sub(rejectedScore), beta)).neg();
            case ROBUST -> {
                NDArray scaled = Scalars.times(chosenScore.sub(rejectedScore), beta);
                NDArray clean = Scalars.times(logSigmoid(scaled), -(1 - eps));
                NDArray flipped = Scalars.times(logSigmoid(scaled.neg()), -eps);
                yield Scalars.dividedBy(clean.sub(flipped), 1 - 2 * eps);
            }
            case EXO_PAIR -> {
                NDArray scaled = Scalars.times(chosenScore.sub(rejectedScore), beta);
                NDArray chosenSide = Activation.sigmoid(scaled).mul(logSigmoid(scaled).sub(Math.log1p(-eps)));
                NDArray rejectedSide = Activation.sigmoid(scaled.neg()).mul(logSigmoid(scaled.neg())
                        .sub(Math.log(eps)));
                yield chosenSide.add(rejectedSide);
            }
            case NCA_PAIR -> {
                NDArray chosen = Scalars.times(chosenRatio, beta);
                NDArray rejected = Scalars.times(rejectedRatio, beta);
                yield logSigmoid(chosen).neg().sub(Scalars.times(logSigmoid(chosen.neg()), 0.5))
                        .sub(Scalars.times(logSigmoid(rejected.neg()), 0.5));
            }
            case BCO_PAIR -> logSigmoid(Scalars.times(chosenRatio, beta)).neg()
                    .sub(logSigmoid(Scalars.times(rejectedRatio, -beta)));
            case SPPO_HARD -> chosenRatio.sub(0.5 / beta).square().add(rejectedRatio.add(0.5 / beta).square());
            case AOT_UNPAIRED -> aot(sorted(chosenRatio), sorted(rejectedRatio), dpo);
            case AOT -> throw new IllegalArgumentException("aot reads the policy's and the reference's log-ratios");
            case APO_ZERO -> Activation.sigmoid(Scalars.times(chosenRatio, beta)).neg().add(1)
                    .add(Activation.sigmoid(Scalars.times(rejectedRatio, beta)));
            case APO_DOWN -> Activation.sigmoid(Scalars.times(chosenRatio, beta))
                    .add(Activation.sigmoid(Scalars.times(chosenRatio.sub(rejectedRatio), beta)).neg().add(1));
            case DISCOPOP -> {
                NDArray logits = Scalars.times(chosenScore.sub(rejectedScore), beta);
                NDArray modulation = Activation.sigmoid(Scalars.dividedBy(logits, dpo.discopopTau()));
                yield logSigmoid(logits).neg().mul(modulation.neg().add(1)).add(logits.neg().exp().mul(modulation));
            }
            case SIGMOID_NORM -> logSigmoid(Scalars.times(
                    chosenScore.div(chosenLengths).sub(rejectedScore.div(rejectedLengths)), beta)).neg();
        };
    }

    /** With delta = beta (upper - lower): -(1 - eps) log sigmoid(delta) - eps log sigmoid(-delta), per position. */
    private static NDArray aot(NDArray upper, NDArray lower, Recipe.Dpo dpo) {
        NDArray delta = Scalars.times(upper.sub(lower), dpo.beta());
        double eps = dpo.labelSmoothing();
        return Scalars.times(logSigmoid(delta), -(1 - eps)).sub(Scalars.times(logSigmoid(delta.neg()), eps));
    }

    /** The values in ascending order, differentiably (a gather at the sorted positions). */
    private static NDArray sorted(NDArray x) {
        try (NDArray order = x.argSort()) {
            return x.get(order);
        }
    }

    /** log sigmoid(x) = -softplus(-x), which torch's softplus keeps finite for large |x|. */
    public static NDArray logSigmoid(NDArray x) {
        return Activation.softPlus(x.neg()).neg();
    }
}
