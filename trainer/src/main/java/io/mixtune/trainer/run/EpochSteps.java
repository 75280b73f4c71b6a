package io.mixtune.trainer.run;

import io.mixtune.trainer.recipe.Recipe;

/**
 * Which micro-batches each optimizer step takes, as transformers' Trainer cuts them: an epoch of M micro-batches is
 * ceil(M / accumulation) steps, its last step taking what is left of the epoch (fewer micro-batches, never any of the
 * next epoch's), and a run of E epochs is E times that. With train.max_steps the epochs keep that layout for as many
 * steps as it says. Micro-batches are numbered along the objective's endless stream: epoch e's are e x M to
 * e x M + M - 1.
 *
 * @param microBatchesPerEpoch M, the objective's micro-batches in one epoch
 * @param accumulation the micro-batches of a whole step (train.gradient_accumulation)
 */
public record EpochSteps(long microBatchesPerEpoch, int accumulation) {

    public EpochSteps {
        if (microBatchesPerEpoch < 1 || accumulation < 1) {
            throw new IllegalArgumentException("an epoch and a step each need a micro-batch at least: got "
                    + microBatchesPerEpoch + " per epoch, " + accumulation + " per step");
        }
    }

    /** transformers' num_update_steps_per_epoch. */
    public long stepsPerEpoch() {
        return (microBatchesPerEpoch + accumulation - 1) / accumulation;
    }

    /** The steps a stage runs: train.max_steps, else train.epochs (1 when unset) whole epochs. */
    public long stageSteps(Recipe.Train train) {
        return train.maxSteps() != null ? train.maxSteps()
                : stepsPerEpoch() * (train.epochs() == null ? 1 : train.epochs());
    }

    /** The first micro-batch of the stage's step {@code stageStep} (0-based). */
    public long firstMicroBatch(long stageStep) {
        return epochOf(stageStep) * microBatchesPerEpoch + stageStep % stepsPerEpoch() * accumulation;
    }

    /** One past the last micro-batch of the stage's step {@code stageStep}. */
    public long endMicroBatch(long stageStep) {
        return epochOf(stageStep) * microBatchesPerEpoch
                + Math.min(stageStep % stepsPerEpoch() * accumulation + accumulation, microBatchesPerEpoch);
    }

    private long epochOf(long stageStep) {
        return stageStep / stepsPerEpoch();
    }
}
