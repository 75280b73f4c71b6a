package io.mixtune.trainer.orpo;

import io.mixtune.data.dataset.PreferenceDataset;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.trainer.dpo.DpoRecipe;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.EpochSteps;
import io.mixtune.trainer.run.MethodRecipe;
import io.mixtune.trainer.run.ShuffledEpochs;
import io.mixtune.trainer.run.SingleStageRun;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingModel;
import io.mixtune.trainer.run.TrainingResult;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.function.BooleanSupplier;

/**
 * ORPO, CPO and SimPO (train.method orpo or cpo) with (Q)LoRA as TRL 1.13's experimental ORPOTrainer and CPOTrainer
 * run them, read top to bottom: {@link #setup} reads and tokenizes the preference pairs as DPO does ({@link
 * DpoRecipe#loadPairs}), loads the model and attaches the adapter; {@link #train} runs the loop ({@link TrainingLoop})
 * over the pairs, ending with output_dir/adapter. There is no reference model: no second adapter, no reference pass,
 * nothing of it in the checkpoints.
 */
public final class OrpoRecipe implements MethodRecipe {
    private final Recipe recipe;
    private final TrainingListener listener;
    private final TrainingModel model;
    private final PreferenceDataset dataset;
    private final List<PreferenceSample> pairs;
    private final long totalSteps;

    private OrpoRecipe(Recipe recipe, TrainingListener listener) {
        this.recipe = recipe;
        this.listener = listener;
        TrainingModel.check(recipe);
        dataset = DpoRecipe.loadPairs(recipe);
        pairs = dataset.stages().get(0);
        model = TrainingModel.load(recipe, listener::onNote);
        totalSteps = new EpochSteps(ShuffledEpochs.microBatchesPerEpoch(pairs.size(), recipe.train().microBatchSize()),
                recipe.train().gradientAccumulation()).stageSteps(recipe.train());
    }

    /** @param listener receives the notes of setting up and, later, the run's events */
    public static OrpoRecipe setup(Recipe recipe, TrainingListener listener) {
        return new OrpoRecipe(recipe, listener);
    }

    @Override
    public long totalSteps() {
        return totalSteps;
    }

    @Override
    public TrainingResult train(Path resumeFrom, BooleanSupplier cancelled) {
        return new SingleStageRun(recipe, model, listener, totalSteps).train(resumeFrom, cancelled,
                this::describePlan, start -> new OrpoObjective(recipe, model, pairs, dataset.validation()));
    }

    private void describePlan(Path outputDir) {
        listener.onNote(model.describe(recipe));
        listener.onNote(OrpoLoss.Method.of(recipe).describe() + "; no reference model");
        listener.onNote("data: " + dataset.report());
        listener.onNote(String.format(Locale.ROOT, "pairs: %d training, %d validation", pairs.size(),
                dataset.validation().size()));
        listener.onNote(SingleStageRun.describeSteps(recipe, totalSteps, " pairs", outputDir));
    }

    @Override
    public void close() {
        model.close();
    }
}
