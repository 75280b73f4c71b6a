package io.mixtune.trainer.run;

import io.mixtune.trainer.optim.GradientClipping;
import io.mixtune.trainer.optim.OptimizerUpdate;
import java.util.List;

/**
 * One optimizer step of any method: zero the gradients, let the objective accumulate its micro-batches' gradients at
 * the loss scaler's scale, then unscale, clip and AdamW at lr ({@link OptimizerUpdate}). When the loss or the norm is
 * not finite nothing is updated, for the loop to stop (or, in float16, to go on at a halved scale).
 */
public final class OptimizerStep {
    private OptimizerStep() {}

    /**
     * What one optimizer step measured, at the weights before its update.
     *
     * @param measured the objective's own measurements (loss, tokens, its metrics)
     * @param gradNorm the global gradient norm before clipping (unscaled)
     * @param lossScale the float16 loss scale the step ran at (1 in float32)
     * @param skipped float16 only: the gradients overflowed, the update was skipped and the scale halved
     */
    public record Result<M extends Objective.Measured>(M measured, double gradNorm, double lossScale,
            boolean skipped) {
        public double loss() {
            return measured.loss();
        }

        public boolean isFinite() {
            return Double.isFinite(measured.loss()) && Double.isFinite(gradNorm);
        }
    }

    /** How a method turns a step's micro-batches into gradients. */
    public interface Gradients<B, M extends Objective.Measured> {
        /**
         * Forward and backward of the step's micro-batches, accumulating into the parameters' gradients (zeroed by
         * the caller) at the context's loss scale; micro-batch j draws dropout from the context's seed + j.
         */
        M backward(List<B> microBatches, StepContext context);
    }

    public static <B, M extends Objective.Measured> Result<M> run(Gradients<B, M> objective, List<B> microBatches,
            StepContext context, double lr) {
        GradientClipping.zero(context.parameters());
        M measured = objective.backward(microBatches, context);
        OptimizerUpdate.Outcome update = OptimizerUpdate.apply(measured.loss(),
                context.maxGradNorm(), context.optimizer(), lr, context.scaler());
        return new Result<>(measured, update.gradNorm(), update.lossScale(), update.skipped());
    }
}
