package io.mixtune.trainer.sft;

import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.EpochSteps;
import io.mixtune.trainer.run.MethodRecipe;
import io.mixtune.trainer.run.SingleStageRun;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.run.TrainingListener;
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
public final class SftRecipe implements MethodRecipe {
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
        dataset = TrainingData.loadTrainingSamples(recipe, listener::onNote);
        model = TrainingModel.load(recipe, listener::onNote);
        objective = new SftObjective(recipe, model, dataset);
        totalSteps = new EpochSteps(objective.microBatchesPerEpoch(), train.gradientAccumulation()).stageSteps(train);
    }

    /** @param listener receives the notes of setting up (the data report, warnings) and, later, the run's events */
    public static SftRecipe setup(Recipe recipe, TrainingListener listener) {
        return new SftRecipe(recipe, listener);
    }

    @Override
    public long totalSteps() {
        return totalSteps;
    }

    @Override
    public TrainingResult train(Path resumeFrom, BooleanSupplier cancelled) {
        return new SingleStageRun(recipe, model, listener, totalSteps).train(resumeFrom, cancelled,
                this::describePlan, start -> objective);
    }

    private void describePlan(Path outputDir) {
        String efficiency = recipe.data().packing()
                ? String.format(Locale.ROOT, ", packing efficiency %.1f%% (%s)", 100 * objective.packingEfficiency(),
                        recipe.data().packingStrategy()) : "";
        listener.onNote(model.describe(recipe));
        listener.onNote(String.format(Locale.ROOT, "data: %s; %d train / %d validation samples, %d micro-batches an "
                + "epoch%s", dataset.report(), dataset.train().size(), dataset.validation().size(),
                objective.microBatchesPerEpoch(), efficiency));
        listener.onNote(SingleStageRun.describeSteps(recipe, totalSteps, "", outputDir));
    }

    @Override
    public void close() {
        model.close();
    }
}
