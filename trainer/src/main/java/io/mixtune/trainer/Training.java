package io.mixtune.trainer;

import io.mixtune.trainer.chat.TemplateWarning;
import io.mixtune.trainer.device.TorchSetup;
import io.mixtune.trainer.distill.DistillRecipe;
import io.mixtune.trainer.dpo.DpoRecipe;
import io.mixtune.trainer.grpo.GrpoRecipe;
import io.mixtune.trainer.grpo.RewardFunction;
import io.mixtune.trainer.grpo.RewardFunctions;
import io.mixtune.trainer.kto.KtoRecipe;
import io.mixtune.trainer.orpo.OrpoRecipe;
import io.mixtune.trainer.reward.RewardRecipe;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.recipe.RecipeValueException;
import io.mixtune.trainer.run.LossPlot;
import io.mixtune.trainer.run.MethodRecipe;
import io.mixtune.trainer.run.MetricsLog;
import io.mixtune.trainer.run.SamplesLog;
import io.mixtune.trainer.run.RunDirectory;
import io.mixtune.trainer.run.TrainingCheckpoint;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingModel;
import io.mixtune.trainer.run.TrainingOutputs;
import io.mixtune.trainer.run.TrackingListener;
import io.mixtune.trainer.run.TrainingResult;
import io.mixtune.trainer.sft.SftRecipe;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BooleanSupplier;

/**
 * Training from Java, what {@code mixtune train} runs: a recipe, the listeners that want its events, and how to treat
 * a run already in output_dir (refused, resumed or started over). Nothing prints unless a listener does; the run's
 * files (metrics.jsonl, loss.png, TensorBoard's when logging.tensorboard is on, checkpoints, adapters) are written as
 * the CLI writes them.
 *
 * <pre>{@code
 * TrainingResult result = Training.load(Path.of("recipe.yaml"), "train.max_steps=10")
 *         .listener(new TrainingListener() {
 *             public void onStep(TrainingListener.StepEnded step) { System.out.println(step.loss()); }
 *         })
 *         .run();
 * }</pre>
 *
 * <p>{@link #cancel} (from a listener or another thread) stops the run after the step in progress, with a checkpoint
 * of that step: {@code resume()} on the same recipe then continues exactly as an uninterrupted run would have.
 */
public final class Training {
    private final Recipe recipe;
    private final RecipeReader.Loaded loaded;
    private final List<TrainingListener> listeners = new ArrayList<>();
    private final List<RewardFunctions.Named> rewardFunctions = new ArrayList<>();
    private RunDirectory.Start start = RunDirectory.Start.FRESH;
    private Path resumeFrom;
    private volatile boolean cancelled;
    private volatile WarmTraining warm;

    private Training(Recipe recipe, RecipeReader.Loaded loaded) {
        this.recipe = recipe;
        this.loaded = loaded;
    }

    public static Training of(Recipe recipe) {
        return new Training(recipe, null);
    }

    /**
     * Reads a recipe file over the defaults, with {@code key.path=value} overrides as {@code --set} takes them;
     * problems found later in what a key names are reported at the line that set it.
     */
    public static Training load(Path recipeFile, String... overrides) {
        RecipeReader.Loaded loaded = RecipeReader.read(recipeFile, List.of(overrides));
        return new Training(loaded.recipe(), loaded);
    }

    public Recipe recipe() {
        return recipe;
    }

    /** Adds a listener; listeners receive events in the order added, after the run's own files are written. */
    public Training listener(TrainingListener listener) {
        listeners.add(listener);
        return this;
    }

    /**
     * Adds a GRPO reward function (train.method grpo), after the recipe's grpo.reward_funcs; {@code name} names its
     * metrics (rewards/NAME/mean and /std), and grpo.reward_weights, when set, holds one weight per function.
     */
    public Training rewardFunction(String name, RewardFunction function) {
        rewardFunctions.add(new RewardFunctions.Named(name, function));
        return this;
    }

    /** Continue the run in output_dir from its newest whole checkpoint. */
    public Training resume() {
        return resume(null);
    }

    /**
     * Continue from a checkpoint directory, or from the newest whole checkpoint of a run directory; null: of
     * output_dir. The recipe must be the run's first (what may differ is listed by {@link RunDirectory}).
     */
    public Training resume(Path checkpointOrRunDir) {
        start = RunDirectory.Start.RESUME;
        resumeFrom = checkpointOrRunDir;
        return this;
    }

    /** Start over in an output_dir that holds a run, deleting only what mixtune wrote there. */
    public Training force() {
        start = RunDirectory.Start.FORCE;
        resumeFrom = null;
        return this;
    }

    /** Stops the run after the step in progress, leaving a checkpoint of it; safe from any thread. */
    public void cancel() {
        cancelled = true;
        WarmTraining members = warm;
        if (members != null) {
            members.cancel();
        }
    }

    /** Trains the recipe to its last step, or to the step where {@link #cancel} was called. */
    public TrainingResult run() {
        // as the command line does before any command: PYTORCH_LIBRARY_PATH's version and flavor, or DJL's download
        // when MIXTUNE_ALLOW_DOWNLOAD allows it (a no-op once the engine is loaded)
        TorchSetup.apply(TorchSetup.downloadAllowedByEnvironment());
        if (recipe.warm().enabled()) {
            return runWarm();
        }
        List<TrainingListener> all = new ArrayList<>();
        MetricsLog.Listener metrics = MetricsLog.listener();
        TrackingListener tracking = new TrackingListener(recipe);
        SamplesLog samples = new SamplesLog();
        all.add(metrics);
        all.add(samples);
        all.add(tracking);
        all.add(LossPlot.listener());
        all.addAll(listeners);
        TrainingListener listener = TrainingListener.all(all);
        if (loaded != null) {
            loaded.warnings().forEach(warning -> listener.onNote("warning: " + warning));
        }
        try {
            TrainingModel.check(recipe); // a model this install cannot train is refused before output_dir is made
            try (RunDirectory run = RunDirectory.open(recipe, start, recipeFile(), resumeFrom); metrics; samples;
                    tracking) {
                // After --force has cleared output_dir: the tokenizer it reads may be a base-model/ being replaced.
                String markers = TemplateWarning.of(recipe);
                if (markers != null) {
                    listener.onNote("warning: " + markers);
                }
                Path resume = null;
                Recipe started = recipe;
                if (start == RunDirectory.Start.RESUME) {
                    resume = checkpointToResume(resumeFrom, listener);
                    started = run.asStarted(recipe, resume);
                    if (started != recipe && loaded != null && loaded.sets("data.packing_fit")) {
                        // best_fit asked for by name: a change of the run's rows, which --resume refuses (the Java
                        // API's recipe cannot say it was asked for, and resumes as the run packed)
                        throw new Refusal("--resume: the run was recorded before data.packing_fit (its recipe.yaml has "
                                + "none) and packed data.packing_strategy bfd first fit: data.packing_fit: (not set, "
                                + "first_fit as the run packed) -> best_fit would change its rows: drop "
                                + "data.packing_fit to resume it, or start a new run");
                    }
                    if (started != recipe) {
                        listener.onNote("the run started before mixtune packed data.packing_strategy bfd best fit "
                                + "as TRL (its recipe.yaml has no data.packing_fit): it resumes first_fit, as it ran");
                    }
                    String warning = resume == null ? run.requireSameRecipe(started)
                            : run.requireSameRecipe(started, resume);
                    if (warning != null) {
                        listener.onNote(warning);
                    }
                }
                TrainingResult result = train(started, resume, listener, () -> cancelled);
                listener.onRunFinished(new TrainingListener.RunFinished(result));
                return result;
            }
        } catch (RecipeValueException e) {
            if (loaded == null) {
                throw e;
            }
            throw loaded.locate(e); // at the line that set the key
        }
    }

    /**
     * A WARM recipe: each member a run of its own in output_dir/members/K (its files and listeners' events as any
     * run's, announced by a note), then the average and the report as notes and a last {@link
     * TrainingListener.RunFinished} whose adapter is the average.
     */
    private TrainingResult runWarm() {
        if (resumeFrom != null) {
            throw new Refusal("--resume " + resumeFrom + ": a WARM run resumes each member from its "
                    + "own newest checkpoint: resume it without naming a checkpoint");
        }
        WarmTraining members = new WarmTraining(recipe, listeners);
        warm = members;
        if (cancelled) {
            members.cancel();
        }
        if (loaded != null) {
            loaded.warnings().forEach(warning -> TrainingListener.all(listeners).onNote("warning: " + warning));
        }
        try {
            return members.run(start, recipeFile());
        } catch (RecipeValueException e) {
            if (loaded == null) {
                throw e;
            }
            throw loaded.locate(e);
        }
    }

    private Path recipeFile() {
        return loaded == null ? null : loaded.source();
    }

    private TrainingResult train(Recipe recipe, Path resume, TrainingListener listener, BooleanSupplier cancel) {
        if (!rewardFunctions.isEmpty() && !recipe.train().readsPrompts()) {
            throw new RecipeValueException("train.method", "Training.rewardFunction adds GRPO reward functions: "
                    + "train.method must be grpo or rloo, got " + recipe.train().method());
        }
        try (MethodRecipe method = setUp(recipe, listener)) {
            return method.train(resume, cancel);
        }
    }

    /**
     * The recipe's method (as the run started, when resumed: {@link RunDirectory#asStarted}), set up: its data read, the
     * model loaded and its adapter attached.
     */
    private MethodRecipe setUp(Recipe recipe, TrainingListener listener) {
        if (recipe.train().method().equals("reward")) {
            return RewardRecipe.setup(recipe, listener);
        }
        if (recipe.train().method().equals("dpo")) {
            return DpoRecipe.setup(recipe, listener);
        }
        if (recipe.train().trainsWithoutReference()) {
            return OrpoRecipe.setup(recipe, listener);
        }
        if (recipe.train().readsPrompts()) {
            return GrpoRecipe.setup(recipe, rewardFunctions, listener);
        }
        if (recipe.train().method().equals("kto")) {
            return KtoRecipe.setup(recipe, listener);
        }
        if (recipe.train().method().equals("distillation")) {
            return DistillRecipe.setup(recipe, listener);
        }
        return SftRecipe.setup(recipe, listener);
    }

    /**
     * The given checkpoint, or the newest whole one of output_dir, or of the run directory given instead of a
     * checkpoint (an easy mistake: that is what is meant); a damaged newest one is named and the one before it used.
     */
    private Path checkpointToResume(Path given, TrainingListener listener) {
        Path checkpoints = Path.of(recipe.outputDir(), TrainingOutputs.CHECKPOINTS_DIR);
        if (given != null && !Files.exists(given) && Files.isDirectory(TrainingCheckpoint.replacedCopyOf(given))) {
            Path copy = TrainingCheckpoint.replacedCopyOf(given);
            listener.onNote("--resume " + given + ": the run stopped while it saved this step again; resuming from its "
                    + "complete copy " + copy);
            given = copy;
        }
        if (given != null && !Files.exists(given)) {
            throw new Refusal("--resume " + given + ": no such checkpoint or run directory (--resume takes "
                    + "RUN/checkpoints/step-N, or the run directory RUN; alone, the newest checkpoint of output_dir)");
        }
        if (given == null && TrainingCheckpoint.list(checkpoints).isEmpty()) {
            // recipe.yaml is there (RunDirectory.open refused an output_dir with neither): killed before its first
            // checkpoint, nothing was kept, so continuing exactly is starting at step 0 (the recipe checked against
            // the run's recipe.yaml all the same), as WARM's members do.
            listener.onNote("--resume: no checkpoint in " + checkpoints + " yet: the run stopped before its first; "
                    + "starting it from step 0");
            return null;
        }
        if (given != null) {
            if (Files.isDirectory(given.resolve(TrainingOutputs.CHECKPOINTS_DIR))
                    && !Files.exists(given.resolve(TrainingCheckpoint.STATE_JSON))) {
                listener.onNote("--resume " + given + ": a run directory, not a checkpoint: resuming from its newest "
                        + "whole checkpoint");
                checkpoints = given.resolve(TrainingOutputs.CHECKPOINTS_DIR);
            } else if (!TrainingCheckpoint.list(given).isEmpty()) {
                checkpoints = given; // RUN/checkpoints itself
            } else {
                TrainingCheckpoint.requireComplete(given);
                return given;
            }
        }
        List<Path> all = TrainingCheckpoint.list(checkpoints);
        if (all.isEmpty()) {
            throw new Refusal("--resume: no checkpoint in " + checkpoints + " to resume from");
        }
        for (int i = all.size() - 1; i >= 0; i--) {
            String problem = TrainingCheckpoint.verify(all.get(i));
            if (problem == null) {
                return all.get(i);
            }
            listener.onNote("warning: skipping " + problem);
        }
        throw new Refusal("--resume: every checkpoint in " + checkpoints + " is damaged (each named above): "
                + "--force starts the run over");
    }
}
