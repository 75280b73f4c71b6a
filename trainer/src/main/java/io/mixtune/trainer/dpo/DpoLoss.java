package io.mixtune.trainer.dpo;

import ai.djl.ndarray.NDArray;
import ai.djl.nn.Activation;
import io.mixtune.model.nn.Scalars;
import io.mixtune.trainer.recipe.Recipe;

/**
 * The DPO objectives per preference pair, as TRL 1.13's DPOTrainer computes them, from the summed completion
 * log-probabilities of the policy and the reference. With d = (policy chosen - policy rejected) - (reference chosen -
 * reference rejected):
 *
 * <ul>
 *   <li>sigmoid (Rafailov et al. 2023): -log sigmoid(beta d);
 *   <li>robust (Chowdhury et al. 2024), with label smoothing eps, the assumed share of flipped labels:
 *       (-(1 - eps) log sigmoid(beta d) + eps log sigmoid(-beta d)) / (1 - 2 eps), unbiased under such flips (TRL
 *       1.13 reads label_smoothing here, not in sigmoid);
 *   <li>ipo (Azar et al. 2023, eq. 17): (d' - 1 / (2 beta))^2 where d' takes each side's log-ratio divided by its
 *       completion length, TRL's normalisation agreed with the IPO authors;
 *   <li>hinge (SLiC, Zhao et al. 2023): relu(1 - beta d).
 * </ul>
 *
 * Reference-free DPO passes zeros as the reference log-probabilities. The arrays are float32 [pairs]; every constant
 * goes through {@link Scalars} because autograd differentiates through all of this.
 */
public final class DpoLoss {
    private DpoLoss() {}

    /**
     * The loss of each pair, [pairs].
     *
     * @param chosenLengths completion tokens of each chosen answer (used by ipo only)
     */
    public static NDArray perPair(Recipe.Dpo dpo, NDArray policyChosen, NDArray policyRejected,
            NDArray referenceChosen, NDArray referenceRejected, NDArray chosenLengths, NDArray rejectedLengths) {
        NDArray chosenRatio = policyChosen.sub(referenceChosen);
        NDArray rejectedRatio = policyRejected.sub(referenceRejected);
        double beta = dpo.beta();
        return switch (dpo.loss()) {
            case "ipo" -> chosenRatio.div(chosenLengths).sub(rejectedRatio.div(rejectedLengths))
                    .sub(1 / (2 * beta)).square();
            case "hinge" -> Activation.relu(Scalars.times(chosenRatio.sub(rejectedRatio), -beta).add(1));
            case "sigmoid" -> logSigmoid(Scalars.times(chosenRatio.sub(rejectedRatio), beta)).neg();
            case "robust" -> {
                double eps = dpo.labelSmoothing();
                NDArray scaled = Scalars.times(chosenRatio.sub(rejectedRatio), beta);
                NDArray clean = Scalars.times(logSigmoid(scaled), -(1 - eps));
                NDArray flipped = Scalars.times(logSigmoid(scaled.neg()), -eps);
                yield Scalars.dividedBy(clean.sub(flipped), 1 - 2 * eps);
            }
            default -> throw new IllegalArgumentException("unknown DPO loss " + dpo.loss());
        };
    }

    /** log sigmoid(x) = -softplus(-x), which torch's softplus keeps finite for large |x|. */
    private static NDArray logSigmoid(NDArray x) {
        return Activation.softPlus(x.neg()).neg();
    }
}
