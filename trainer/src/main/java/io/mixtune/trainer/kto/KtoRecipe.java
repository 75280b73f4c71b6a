package io.mixtune.trainer.kto;

import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.LabeledDataset;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.preference.PreferenceTokenizer;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeValueException;
import io.mixtune.trainer.run.EpochSteps;
import io.mixtune.trainer.run.MethodRecipe;
import io.mixtune.trainer.run.RunStart;
import io.mixtune.trainer.run.SingleStageRun;
import io.mixtune.trainer.run.TrainingCheckpoint;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingModel;
import io.mixtune.trainer.run.TrainingResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.function.BooleanSupplier;

/**
 * KTO (Ethayarajh et al. 2024) with (Q)LoRA as TRL 1.13's KTOTrainer runs it, read top to bottom: {@link #setup} reads
 * and tokenizes the unpaired examples (or pairs, unpaired), loads the model and attaches the adapter; {@link #train}
 * computes the reference's log-probs of every example and of its KL row once (or reads them from the checkpoint it
 * resumes), then runs the loop ({@link TrainingLoop}) over the examples in file order, ending with output_dir/adapter.
 * The reference is never a second copy of the model: the base with the adapter switched off, or model.adapter loaded
 * a second time and frozen.
 */
public final class KtoRecipe implements MethodRecipe {
    private final Recipe recipe;
    private final TrainingListener listener;
    private final TrainingModel model;
    private final LabeledDataset dataset;
    private final boolean referenceAdapter;
    private final List<KtoBatch> batches;
    private final List<KtoBatch> validationBatches;
    private final long totalSteps;

    private KtoRecipe(Recipe recipe, TrainingListener listener) {
        this.recipe = recipe;
        this.listener = listener;
        Recipe.Train train = recipe.train();
        TrainingModel.check(recipe);
        dataset = loadExamples(recipe);
        String warning = LabeledDataset.weightWarning(dataset.train(), recipe.kto().desirableWeight(),
                recipe.kto().undesirableWeight());
        if (warning != null) {
            listener.onNote("warning: " + warning + " (TRL 1.13's KTOTrainer; kto.desirable_weight, "
                    + "kto.undesirable_weight)");
        }
        model = TrainingModel.load(recipe, listener::onNote);
        referenceAdapter = recipe.model().adapter() != null;
        if (referenceAdapter) {
            PeftAdapter.load(model.lora(), Path.of(recipe.model().adapter()), KtoReference.REFERENCE_ADAPTER);
        }
        long padId = model.model().config().eosTokenId();
        batches = KtoObjective.inOrder(recipe, dataset.train(), padId);
        validationBatches = KtoObjective.inOrder(recipe, dataset.validation(), padId);
        totalSteps = new EpochSteps(batches.size(), train.gradientAccumulation()).stageSteps(train);
    }

    /**
     * The examples, before the model loads so that bad data stops the run first (`mixtune validate` reads them the same
     * way): tokenized with the model's tokenizer and the recipe's template, in file order, validation from its own
     * files or held out (seeded by train.seed).
     */
    public static LabeledDataset loadExamples(Recipe recipe) {
        SampleCache.TokenizerFile tokenizerFile = TrainingData.tokenizer(recipe);
        DataConfig data = recipe.data();
        PreferenceTokenizer tokenizer = new PreferenceTokenizer(data.chatTemplate(tokenizerFile), tokenizerFile.open(),
                data.maxSeqLen(), tokenizerFile.eosId(), PreferenceTokenizer.Truncation.KEEP_START);
        try {
            return LabeledDataset.load(data.files().stream().map(DataConfig::file).toList(),
                    data.validationFiles().stream().map(DataConfig::file).toList(), data.validationRatio(),
                    recipe.train().seed(), tokenizer, data.skipInvalid());
        } catch (IllegalArgumentException e) {
            if (e instanceof RecipeValueException) {
                throw e;
            }
            throw new RecipeValueException("data.files", e.getMessage());
        }
    }

    /** @param listener receives the notes of setting up (warnings) and, later, the run's events */
    public static KtoRecipe setup(Recipe recipe, TrainingListener listener) {
        return new KtoRecipe(recipe, listener);
    }

    @Override
    public long totalSteps() {
        return totalSteps;
    }

    @Override
    public TrainingResult train(Path resumeFrom, BooleanSupplier cancelled) {
        return new SingleStageRun(recipe, model, listener, totalSteps).train(resumeFrom, cancelled,
                this::describePlan, start -> new KtoObjective(recipe, model, batches, validationBatches,
                        reference(start, resumeFrom)));
    }

    /** The reference's log-probs: computed once as the run starts, or as the checkpoint it resumes kept them. */
    private KtoReference reference(RunStart start, Path resumeFrom) {
        if (start.step() == 0 || resumeFrom == null) {
            return KtoReference.compute(model, referenceAdapter, batches, dataset.train().size(), validationBatches,
                    dataset.validation().size());
        }
        Path file = resumeFrom.resolve(TrainingCheckpoint.REFERENCE_STATE);
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException("checkpoint " + resumeFrom + " has no "
                    + TrainingCheckpoint.REFERENCE_STATE + ": it was not written by a KTO run of this recipe");
        }
        return KtoReference.read(model, referenceAdapter, file);
    }

    private void describePlan(Path outputDir) {
        listener.onNote(model.describe(recipe));
        Recipe.Kto kto = recipe.kto();
        long desirable = dataset.train().stream().filter(s -> s.label()).count();
        listener.onNote(String.format(Locale.ROOT, "KTO: loss %s, beta %s, desirable_weight %s, undesirable_weight "
                + "%s%s; reference: %s", kto.loss(), kto.beta(), kto.desirableWeight(), kto.undesirableWeight(),
                kto.estimatesKl() ? ", KL estimate from each micro-batch's mismatched completions" : "",
                referenceAdapter ? "base + " + recipe.model().adapter() + " (a frozen second copy of the adapter)"
                        : "the base (adapter off)"));
        listener.onNote("data: " + dataset.report());
        listener.onNote(String.format(Locale.ROOT, "examples: %d training (%d desirable, %d undesirable) in file "
                + "order, %d validation", dataset.train().size(), desirable, dataset.train().size() - desirable,
                dataset.validation().size()));
        listener.onNote(SingleStageRun.describeSteps(recipe, totalSteps, " examples", outputDir));
    }

    @Override
    public void close() {
        model.close();
    }
}
