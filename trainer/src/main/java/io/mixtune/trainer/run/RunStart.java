package io.mixtune.trainer.run;

import ai.djl.ndarray.NDArray;
import io.mixtune.trainer.recipe.Recipe;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.function.Consumer;

/**
 * How every method's run begins: from a checkpoint (its state loaded, the adapter's arrays put back) or fresh; the
 * resolved recipe written to output_dir; the plan told; {@link TrainingListener.RunStarted} sent.
 *
 * @param step the step the run starts after (0 when fresh)
 * @param resumed the checkpoint's state, or null for a fresh run
 * @param totalSteps the run's last step
 */
public record RunStart(Path outputDir, long step, TrainingCheckpoint.State resumed, long totalSteps) {

    /**
     * @param resumeFrom a checkpoint directory to continue from, or null for a fresh run
     * @param describePlan tells the listener what will run, given output_dir
     */
    public static RunStart begin(Recipe recipe, TrainingModel model, Path resumeFrom, long totalSteps,
            TrainingListener listener, Consumer<Path> describePlan) {
        Path outputDir = TrainingOutputs.outputDir(recipe);
        long step = 0;
        TrainingCheckpoint.State resumed = null;
        if (resumeFrom != null) {
            List<NDArray> parameters = model.lora().parameters(TrainingModel.ADAPTER_NAME);
            resumed = TrainingCheckpoint.load(resumeFrom, TrainingCheckpoint.shapesOf(parameters));
            resumed.restoreParameters(parameters); // what a stage's reference may copy before the loop restores all
            step = resumed.step();
            listener.onNote(String.format(Locale.ROOT, "resuming from %s at step %d of %d", resumeFrom, step,
                    totalSteps));
        }
        TrainingOutputs.writeResolvedRecipe(recipe, outputDir, resumeFrom != null);
        describePlan.accept(outputDir);
        listener.onRunStarted(new TrainingListener.RunStarted(outputDir, step, totalSteps, resumeFrom));
        return new RunStart(outputDir, step, resumed, totalSteps);
    }

    /** The checkpoints output_dir holds now, oldest first. */
    public List<Path> checkpoints() {
        return TrainingCheckpoint.list(outputDir.resolve(TrainingOutputs.CHECKPOINTS_DIR));
    }

    /** Resumed from the checkpoint of a run's last step: nothing is left to train. */
    public boolean alreadyFinished() {
        return resumed != null && step >= totalSteps;
    }

    /**
     * The result of a run of one stage (SFT, reward models) that ended as {@code outcome} says; a run that had already
     * finished trained no stage (its stage's losses would be those of no step: NaN).
     */
    public TrainingResult result(TrainingLoop.Outcome outcome) {
        TrainingResult.StageResult stage = outcome.result();
        return new TrainingResult(outcome.step(), outcome.cancelled() && stage.adapterDir() == null,
                alreadyFinished(), stage.adapterDir(), stage.averagedAdapters(), checkpoints(),
                alreadyFinished() ? List.of() : List.of(stage));
    }
}
