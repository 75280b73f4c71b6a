package io.mixtune.trainer.kto;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.nn.Activation;
import io.mixtune.model.nn.Scalars;
import io.mixtune.trainer.recipe.Recipe;

/**
 * The KTO objective of a micro-batch as TRL 1.13's KTOTrainer._compute_loss computes it, from the summed completion
 * log-probs of the policy and the reference. With r = policy - reference per example and z the KL estimate
 * ({@link #klEstimate}): a desirable example's loss is desirable_weight x (1 - sigmoid(beta (r - z))) (KTO paper eq.
 * 7), an undesirable one's undesirable_weight x (1 - sigmoid(beta (z - r))); apo_zero_unpaired is the same with z = 0
 * (1 - sigmoid(beta r) and sigmoid(beta r), APO's eq. 7 unpaired). The objective is their mean over the micro-batch's
 * examples (TRL's losses.nanmean(): the weights do not divide). Arrays float32 [examples]; every constant goes through
 * {@link Scalars} because autograd differentiates through this.
 */
public final class KtoLoss {
    private KtoLoss() {}

    /**
     * TRL's KL estimate z of a micro-batch: the mean over its examples of the policy's minus the reference's
     * log-probs of the mismatched (prompt, completion) rows, clamped at 0, a constant to the gradient (TRL detaches it).
     * float32 as TRL. 0 where the loss estimates none (null arrays).
     */
    public static float klEstimate(float[] policyKl, float[] referenceKl) {
        if (policyKl == null) {
            return 0;
        }
        float sum = 0;
        for (int i = 0; i < policyKl.length; i++) {
            sum += policyKl[i] - referenceKl[i];
        }
        return Math.max(0, sum / policyKl.length);
    }

    /**
     * @param perExample each example's weighted loss, [examples]
     * @param value their mean, the scalar to differentiate
     */
    public record Objective(NDArray perExample, NDArray value) {}

    /** @param kl the micro-batch's KL estimate ({@link #klEstimate}; ignored by apo_zero_unpaired) */
    public static Objective objective(Recipe.Kto kto, NDArray policy, NDArray reference, boolean[] labels, float kl,
            NDManager manager) {
        float[] signs = new float[labels.length];
        float[] weights = new float[labels.length];
        for (int i = 0; i < labels.length; i++) {
            signs[i] = labels[i] ? 1 : -1;
            weights[i] = (float) (labels[i] ? kto.desirableWeight() : kto.undesirableWeight());
        }
        NDArray ratio = policy.sub(reference);
        NDArray shifted = kto.estimatesKl() ? ratio.sub(kl) : ratio;
        // sign x beta (r - z): beta (r - z) for a desirable example, beta (z - r) for an undesirable one (negation is
        // exact, so each equals TRL's term bit for bit)
        NDArray scaled = Scalars.times(shifted, kto.beta()).mul(manager.create(signs));
        NDArray perExample = Activation.sigmoid(scaled).neg().add(1).mul(manager.create(weights));
        return new Objective(perExample, perExample.mean());
    }
}
