package io.mixtune.trainer.run;

import java.nio.file.Path;
import java.util.function.BooleanSupplier;

/**
 * A method's recipe once set up (its data read, the model loaded and its adapter attached), as each method's class
 * (SftRecipe, DpoRecipe, ...) builds it: what {@code Training} runs, whatever the method. Closing it frees the model.
 */
public interface MethodRecipe extends AutoCloseable {

    /** The run's last step, over all its stages. */
    long totalSteps();

    /**
     * Trains to the last step, or until {@code cancelled} says so after a step.
     *
     * @param resumeFrom a checkpoint directory to continue from, or null for a fresh run
     */
    TrainingResult train(Path resumeFrom, BooleanSupplier cancelled);

    @Override
    void close();
}
