package io.mixtune.trainer.optim;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;

/**
 * The end of every optimizer step, SFT's and DPO's alike, once backward has accumulated the step's gradients at the
 * loss scaler's scale: unscale them, clip their global norm, tell the scaler whether they were finite, and let AdamW
 * update at lr unless the loss or the norm is not finite or the scaler skips the step.
 */
public final class OptimizerUpdate {
    private OptimizerUpdate() {}

    /**
     * @param gradNorm the global gradient norm before clipping (unscaled)
     * @param lossScale the float16 loss scale the step's backward ran at (1 in float32)
     * @param finite the loss and the norm were finite
     * @param skipped float16 only: the gradients overflowed, the update was skipped and the scale halved
     */
    public record Outcome(double gradNorm, double lossScale, boolean finite, boolean skipped) {}

    /** The step for the gradients of {@code optimizer}'s parameters. */
    public static Outcome apply(double loss, double maxGradNorm, AdamW optimizer, double lr, LossScaler scaler) {
        double scale = scaler.scale();
        // Unscaled, clipped and applied in a flat copy of the gradients per AdamW bucket (the same bits as array by
        // array); the parameters' own gradients keep what backward left in them.
        try (NDList gradients = optimizer.flatGradients()) {
            if (scale != 1) {
                for (NDArray bucket : gradients) {
                    bucket.muli(1 / scale);
                }
            }
            double gradNorm = GradientClipping.clip(gradients, optimizer.bucketSizes(), maxGradNorm);
            boolean finite = Double.isFinite(loss) && Double.isFinite(gradNorm);
            boolean apply = scaler.update(finite);
            if (finite && apply) {
                optimizer.step(lr, gradients);
            }
            return new Outcome(gradNorm, scale, finite, !apply);
        }
    }
}
