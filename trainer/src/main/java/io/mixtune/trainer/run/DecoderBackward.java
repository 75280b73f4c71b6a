package io.mixtune.trainer.run;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.training.GradientCollector;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Scalars;
import java.util.OptionalLong;

/**
 * One micro-batch's backward through the decoder and a head of the caller's, accumulating into the parameters'
 * gradients: the whole graph under autograd, or layer by layer with gradient checkpointing ({@link
 * CheckpointedBackward}). SFT, DPO and reward models differ only in their head, so the two ways are written once, here,
 * and give the same gradients (CheckpointedBackwardTest).
 */
public final class DecoderBackward {
    private DecoderBackward() {}

    /**
     * The objective computed with autograd from the final (normed) hidden states [B, T, hidden]; what it measures
     * besides (a loss, rewards) the head keeps itself, since its arrays go with {@code manager}.
     */
    public interface Head {
        NDArray objective(NDArray states, NDManager manager);
    }

    /**
     * Backward of head's objective + auxWeight x the load-balancing loss.
     *
     * @param dropoutSeed LoRA dropout masks are drawn from it, per layer, the same way on both paths
     * @return the load-balancing loss, NaN for a dense model
     */
    public static double run(CausalLm model, TrainingBatch batch, Head head, double auxWeight, boolean checkpointing,
            long dropoutSeed, NDManager manager) {
        return run(model, batch, head, auxWeight, checkpointing, dropoutSeed, EmbeddingNoise.OFF, manager);
    }

    /** The same with {@code noise} (NEFTune) on the embeddings, drawn from dropoutSeed on both paths alike. */
    static double run(CausalLm model, TrainingBatch batch, Head head, double auxWeight, boolean checkpointing,
            long dropoutSeed, EmbeddingNoise noise, NDManager manager) {
        if (checkpointing) {
            return CheckpointedBackward.run(model, batch, head, auxWeight, dropoutSeed, noise, manager);
        }
        try (NDManager step = manager.newSubManager();
                GradientCollector collector = Engine.getInstance().newGradientCollector()) {
            CausalLmLoss.Forward forward = CausalLmLoss.forward(model, batch, step, OptionalLong.of(dropoutSeed),
                    noise);
            NDArray objective = head.objective(forward.states(), step);
            if (forward.loadBalancing() != null && auxWeight > 0) {
                objective = objective.add(Scalars.times(forward.loadBalancing(), auxWeight));
            }
            collector.backward(objective);
            return forward.loadBalancing() == null ? Double.NaN : forward.loadBalancing().getFloat();
        }
    }
}
