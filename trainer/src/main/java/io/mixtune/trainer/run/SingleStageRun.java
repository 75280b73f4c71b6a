package io.mixtune.trainer.run;

import io.mixtune.trainer.recipe.Recipe;
import java.nio.file.Path;
import java.util.Locale;
import java.util.function.BooleanSupplier;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * The run of a method that trains in one stage (SFT, ORPO/CPO, KTO, GRPO, distillation, reward models; DPO's stages
 * each run the loop): begun as every run is ({@link RunStart}), announced as stage 1 of 1, the loop ({@link
 * TrainingLoop}) over all its steps, its adapter in output_dir/adapter. The method says only what it trains on.
 *
 * @param totalSteps the run's last step
 */
public record SingleStageRun(Recipe recipe, TrainingModel model, TrainingListener listener, long totalSteps) {

    /**
     * Trains to the last step, or until {@code cancelled} says so after a step.
     *
     * @param resumeFrom a checkpoint directory to continue from, or null for a fresh run
     * @param describePlan tells the listener what will run, given output_dir
     * @param objective the method's objective, built once the run has begun: a resumed run's reads what it keeps
     *     (reference log-probs, rollouts) from the checkpoint it resumes
     */
    public TrainingResult train(Path resumeFrom, BooleanSupplier cancelled, Consumer<Path> describePlan,
            Function<RunStart, ? extends Objective<?, ?>> objective) {
        RunStart start = RunStart.begin(recipe, model, resumeFrom, totalSteps, listener, describePlan);
        listener.onStageStarted(new TrainingListener.StageStarted(1, 1, 0, totalSteps, null));
        Objective<?, ?> stageObjective = objective.apply(start);
        TrainingLoop.Outcome outcome = new TrainingLoop(recipe, model, start.outputDir(), totalSteps, listener,
                cancelled).run(stageObjective, new TrainingLoop.Stage(1, false, 0, totalSteps,
                        start.outputDir().resolve("adapter"), true), start.step(), start.resumed());
        return start.result(outcome);
    }

    /**
     * The plan's last note: the steps, what a step is made of ({@code unit}: " pairs", " examples", or "" for
     * samples) and the schedule.
     */
    public static String describeSteps(Recipe recipe, long totalSteps, String unit, Path outputDir) {
        Recipe.Train train = recipe.train();
        return String.format(Locale.ROOT, "training %d steps of %d x %d%s, lr %.2e %s, output %s", totalSteps,
                train.microBatchSize(), train.gradientAccumulation(), unit, train.lr(), train.schedule(), outputDir);
    }
}
