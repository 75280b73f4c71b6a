package io.mixtune.trainer.sft;

import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.EpochSteps;
import io.mixtune.trainer.run.RunStart;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingLoop;
import io.mixtune.trainer.run.TrainingModel;
import io.mixtune.trainer.run.TrainingResult;
import java.nio.file.Path;
import java.util.Locale;
import java.util.function.BooleanSupplier;

/**
 * Supervised fine-tuning with (Q)LoRA, read top to bottom: {@link #setup} tokenizes the data, loads the model and
 * attaches the adapter; {@link #train} runs the loop ({@link TrainingLoop}) with the SFT objective
 * ({@link SftObjective}) over one stage; the outputs are the PEFT adapter, metrics.jsonl, loss.png and the resolved
 * recipe in output_dir.
 */
public final class SftRecipe implements AutoCloseable {
    private final Recipe recipe;
    private final TrainingListener listener;
    private final ChatDataset dataset;
    private final TrainingModel model;
    private final SftObjective objective;
    private final long totalSteps;

    private SftRecipe(Recipe recipe, TrainingListener listener) {
        this.recipe = recipe;
        this.listener = listener;
        Recipe.Train train = recipe.train();
        TrainingModel.check(recipe);
        // The data first, so that bad data (or a tokenizer that does not fit the model) stops the run before the model
        // loads: tokenized turn by turn with the model's tokenizer (a preset's: the bundled Mistral v1 one), once:
        // later runs and `mixtune data prepare` share output_dir/data-cache.
        SampleCache.Loaded data = TrainingData.load(recipe, TrainingData.cacheDir(recipe));
        if (data.note() != null) {
            listener.onNote(data.note());
        }
        dataset = TrainingData.requireTrainingSamples(recipe, data.dataset());
        model = TrainingModel.load(recipe, listener::onNote);
        objective = new SftObjective(recipe, model, dataset);
        totalSteps = new EpochSteps(objective.microBatchesPerEpoch(), train.gradientAccumulation()).stageSteps(train);
    }

    /** @param listener receives the notes of setting up (the data report, warnings) and, later, the run's events */
    public static SftRecipe setup(Recipe recipe, TrainingListener listener) {
        return new SftRecipe(recipe, listener);
    }

    public long totalSteps() {
        return totalSteps;
    }

    public ChatDataset dataset() {
        return dataset;
    }

    /**
     * Trains to the last step, or until {@code cancelled} says so after a step.
     *
     * @param resumeFrom a checkpoint directory to continue from, or null for a fresh run
     */
    public TrainingResult train(Path resumeFrom, BooleanSupplier cancelled) {
        RunStart start = RunStart.begin(recipe, model, resumeFrom, totalSteps, listener, this::describePlan);
        listener.onStageStarted(new TrainingListener.StageStarted(1, 1, 0, totalSteps, null));
        TrainingLoop.Outcome outcome = new TrainingLoop(recipe, model, start.outputDir(), totalSteps, listener,
                cancelled).run(objective, new TrainingLoop.Stage(1, false, 0, totalSteps,
                        start.outputDir().resolve("adapter"), true), start.step(), start.resumed());
        return start.result(outcome);
    }

    private void describePlan(Path outputDir) {
        Recipe.Train train = recipe.train();
        String efficiency = recipe.data().packing()
                ? String.format(Locale.ROOT, ", packing efficiency %.1f%%", 100 * objective.packingEfficiency()) : "";
        listener.onNote(TrainingModel.describe(recipe, model.model(), model.baseModelDir(),
                model.lora().parameters(TrainingModel.ADAPTER_NAME)));
        listener.onNote(String.format(Locale.ROOT, "data: %s; %d train / %d validation samples, %d micro-batches an "
                + "epoch%s", dataset.report(), dataset.train().size(), dataset.validation().size(),
                objective.microBatchesPerEpoch(), efficiency));
        listener.onNote(String.format(Locale.ROOT, "training %d steps of %d x %d, lr %.2e %s, output %s", totalSteps,
                train.microBatchSize(), train.gradientAccumulation(), train.lr(), train.schedule(), outputDir));
    }

    @Override
    public void close() {
        model.close();
    }
}
