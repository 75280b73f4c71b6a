package io.mixtune.trainer.run;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.LossScaler;
import java.util.List;

/**
 * What one optimizer step works with besides its micro-batches and learning rate: the model and its trainable
 * arrays, the update (AdamW, clipping, the float16 loss scaler) and how the forward passes run.
 *
 * @param auxCoefficient the router load-balancing coefficient (0 for a dense model or with router_aux_loss off)
 * @param gradientCheckpointing recompute each layer in backward instead of keeping its activations
 * @param dropoutSeed micro-batch j of the step draws its LoRA dropout masks from dropoutSeed + j (and the layer), so
 *     a resumed run draws the same masks
 */
public record StepContext(CausalLm model, List<NDArray> parameters, NDManager manager, AdamW optimizer,
        LossScaler scaler, double maxGradNorm, double auxCoefficient, boolean gradientCheckpointing,
        long dropoutSeed) {

    /** The same context for a step whose micro-batches draw dropout from {@code seed} on. */
    public StepContext withDropoutSeed(long seed) {
        return new StepContext(model, parameters, manager, optimizer, scaler, maxGradNorm, auxCoefficient,
                gradientCheckpointing, seed);
    }
}
