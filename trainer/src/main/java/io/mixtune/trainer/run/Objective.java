package io.mixtune.trainer.run;

import java.nio.file.Path;
import java.util.Map;

/**
 * A training method as the loop sees it (SFT, DPO): its stream of micro-batches, how a step's micro-batches become
 * gradients, and its evaluation. Everything else (schedule, clipping and AdamW, the NaN/Inf rule, cadences, averages,
 * checkpoints, resume, outputs) is {@link TrainingLoop}'s, the same for every method.
 *
 * @param <B> the method's micro-batch
 * @param <M> what its step measures
 */
public interface Objective<B, M extends Objective.Measured> extends OptimizerStep.Gradients<B, M> {
    /** What a step measured before the update, at the weights it started from. */
    interface Measured {
        /** The step's objective (the number training minimises). */
        double loss();

        /** Real tokens the step read. */
        long tokens();

        /** The method's metrics for the step's record, in order (such as target_tokens, or TRL's rewards/...). */
        Map<String, Object> metrics();

        /** A few figures for a progress line, after the loss ("" for none). */
        default String figures() {
            return "";
        }
    }

    /** Micro-batches in one pass over the training data. */
    long microBatchesPerEpoch();

    /** Micro-batch {@code index} of the endless, seeded stream (epoch after epoch). */
    B microBatch(long index);

    boolean hasValidation();

    /**
     * The validation metrics (eval_ names, eval_loss first) of the weights as they are; the caller holds the
     * adapters in evaluation mode.
     */
    Map<String, Number> evaluate();

    /** A line for people about an evaluation's metrics. */
    String describeEvaluation(Map<String, Number> metrics);

    /** Writes what a resumed run needs besides the loop's state into a checkpoint being saved (DPO's reference). */
    default void saveState(Path checkpointDir) {}
}
