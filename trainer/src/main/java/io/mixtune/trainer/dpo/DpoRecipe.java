package io.mixtune.trainer.dpo;

import ai.djl.ndarray.NDArray;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.PreferenceDataset;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.data.preference.PreferenceTokenizer;
import io.mixtune.data.preference.StageSplit;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.nn.InPlaceCopy;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.recipe.DpoLossType;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeValueException;
import io.mixtune.trainer.run.EpochSteps;
import io.mixtune.trainer.run.MethodRecipe;
import io.mixtune.trainer.run.RunStart;
import io.mixtune.trainer.run.ShuffledEpochs;
import io.mixtune.trainer.run.TrainingCheckpoint;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingLoop;
import io.mixtune.trainer.run.TrainingModel;
import io.mixtune.trainer.run.TrainingOutputs;
import io.mixtune.trainer.run.TrainingResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.BooleanSupplier;
import java.util.function.Function;

/**
 * Direct Preference Optimization (Rafailov et al. 2023) with (Q)LoRA, and Stage-DPO (WizardLM-2), read top to bottom:
 * {@link #setup} tokenizes the preference pairs into their stages, loads the model and attaches the adapter;
 * {@link #train} runs the stages one after the other, each "set the reference, run the loop over its steps"
 * ({@link TrainingLoop} with a fresh AdamW and schedule), ending with the stage's adapter in output_dir/stage-K/adapter.
 * The final adapter (output_dir/adapter) is the last stage's.
 *
 * <p>The reference is never a second copy of the model. Stage 1's is the base with the adapter switched off, or, when
 * the recipe starts from an SFT adapter (model.adapter), that adapter loaded a second time and frozen (TRL's
 * ref_adapter_name). Stage K's is the policy stage K-1 ended with, copied into that second adapter. Its log-probs are
 * computed once when the stage starts (precompute_reference) and kept in the checkpoints.
 *
 * <p>Steps are numbered across stages (metrics.jsonl and checkpoints use one count), so where a run stands is its step
 * alone: a resumed run finds the stage, the step within it and the micro-batches it would have seen.
 */
public final class DpoRecipe implements MethodRecipe {
    private final Recipe recipe;
    private final Recipe.Dpo dpo;
    private final TrainingListener listener;
    private final TrainingModel model;
    private final List<NDArray> parameters;
    private final PreferenceDataset dataset;
    private final long padId;
    private final long[] stageSteps;
    private final long totalSteps;
    private List<PreferenceBatch> validationBatches;

    private DpoRecipe(Recipe recipe, TrainingListener listener) {
        this.recipe = recipe;
        this.dpo = recipe.dpo();
        this.listener = listener;
        Recipe.Train train = recipe.train();
        TrainingModel.check(recipe);
        dataset = loadPairs(recipe, pairs -> MarginStages.fromModel(recipe, pairs, listener::onNote));

        model = TrainingModel.load(recipe, listener::onNote);
        parameters = model.lora().parameters(TrainingModel.ADAPTER_NAME);
        if (recipe.model().adapter() != null && !dpo.referenceFree()) {
            PeftAdapter.load(model.lora(), Path.of(recipe.model().adapter()), StageReference.REFERENCE_ADAPTER);
        }
        padId = model.model().config().eosTokenId();
        stageSteps = new long[dataset.stages().size()];
        for (int k = 0; k < stageSteps.length; k++) {
            stageSteps[k] = new EpochSteps(ShuffledEpochs.microBatchesPerEpoch(dataset.stages().get(k).size(),
                    train.microBatchSize()), train.gradientAccumulation()).stageSteps(train);
        }
        totalSteps = Arrays.stream(stageSteps).sum();
    }

    /**
     * The preference pairs, before the model loads so that bad data stops the run first (`mixtune validate` reads them
     * the same way): tokenized with the model's tokenizer and the recipe's template, one pool split into stages in file
     * order (or by margin, dpo.stage_order) or a file per stage, validation from its own files or held out of each
     * stage (seeded). Runs no model: with dpo.margin_model the stages hold as many pairs as training gives them, in
     * file order.
     */
    public static PreferenceDataset loadPairs(Recipe recipe) {
        return loadPairs(recipe, null);
    }

    /**
     * @param modelMargins dpo.margin_model's margins of the training pairs ({@link MarginStages#fromModel}), or null
     *     where no model may run
     */
    static PreferenceDataset loadPairs(Recipe recipe, Function<List<PreferenceSample>, double[]> modelMargins) {
        Recipe.Dpo dpo = recipe.dpo();
        SampleCache.TokenizerFile tokenizerFile = TrainingData.tokenizer(recipe);
        DataConfig data = recipe.data();
        // Longer pairs: DPOTrainer cuts each side's end (keep_start), RewardTrainer drops the pair.
        PreferenceTokenizer tokenizer = new PreferenceTokenizer(data.chatTemplate(tokenizerFile), tokenizerFile.open(),
                data.maxSeqLen(), tokenizerFile.eosId(), recipe.train().method().equals("reward")
                        ? PreferenceTokenizer.Truncation.DROP : PreferenceTokenizer.Truncation.KEEP_START);
        List<List<Path>> stageFiles = dpo.stageFiles().isEmpty() ? List.of(paths(data.files()))
                : dpo.stageFiles().stream().map(file -> List.of(DataConfig.file(file))).toList();
        boolean byMargin = dpo.stageOrder().equals(Recipe.Dpo.ORDER_MARGIN);
        if (byMargin && dpo.marginModel() != null) {
            MarginStages.check(recipe);
        }
        PreferenceDataset dataset;
        try {
            // By margin, the pool is held out of as it is for stages in file order, then ordered and split.
            dataset = PreferenceDataset.load(stageFiles, byMargin ? 1 : dpo.stageCount(),
                    paths(data.validationFiles()), data.validationRatio(), recipe.train().seed(), tokenizer,
                    data.skipInvalid());
        } catch (PreferenceDataset.EmptyStageException e) {
            // The files that stage reads are the recipe's to fix: reported at the key that names them.
            throw new RecipeValueException(dpo.stageFiles().isEmpty() ? "data.files" : "dpo.stages", e.getMessage());
        }
        if (!byMargin) {
            return dataset;
        }
        List<PreferenceSample> pool = dataset.stages().get(0);
        double[] margins = dpo.marginModel() == null ? MarginStages.fromScores(pool)
                : modelMargins != null ? modelMargins.apply(pool) : new double[pool.size()];
        return new PreferenceDataset(StageSplit.byMargin(pool, margins, dpo.stageCount()), dataset.validation(),
                dataset.report());
    }

    /** @param listener receives the notes of setting up (warnings) and, later, the run's events */
    public static DpoRecipe setup(Recipe recipe, TrainingListener listener) {
        return new DpoRecipe(recipe, listener);
    }

    @Override
    public long totalSteps() {
        return totalSteps;
    }

    public PreferenceDataset dataset() {
        return dataset;
    }

    /**
     * Trains every stage to its last step, or until {@code cancelled} says so after a step.
     *
     * @param resumeFrom a checkpoint directory to continue from, or null for a fresh run
     */
    @Override
    public TrainingResult train(Path resumeFrom, BooleanSupplier cancelled) {
        RunStart start = RunStart.begin(recipe, model, resumeFrom, totalSteps, listener, this::describePlan);
        Path outputDir = start.outputDir();
        long step = start.step();
        TrainingLoop loop = new TrainingLoop(recipe, model, outputDir, totalSteps, listener, cancelled);
        List<TrainingResult.StageResult> results = new ArrayList<>();
        long stageStart = 0;
        for (int stage = 0; stage < stageSteps.length; stage++) {
            long stageEnd = stageStart + stageSteps[stage];
            // resumed at a stage's last step with load_best_model_at_end: its end runs again, to load its best
            // checkpoint before the next stage takes the policy as its reference (the checkpoint holds the last step)
            boolean endAgain = recipe.train().loadBestModelAtEnd() && start.resumed() != null
                    && step == stageEnd && step == start.resumed().step();
            if (step >= stageEnd && !endAgain) {
                stageStart = stageEnd; // finished before the run was stopped
                continue;
            }
            // The reference set up for this stage, or as the checkpoint left it.
            StageReference reference;
            if (step > stageStart) {
                reference = resumeReference(stage, resumeFrom);
            } else {
                listener.onStageStarted(new TrainingListener.StageStarted(stage + 1, stageSteps.length, stageStart,
                        stageSteps[stage], String.format(Locale.ROOT, "stage %d of %d: %d pairs, %d steps", stage + 1,
                                stageSteps.length, dataset.stages().get(stage).size(), stageSteps[stage])));
                reference = startReference(stage);
            }
            DpoObjective objective = new DpoObjective(recipe, model, stage, dataset.stages().get(stage),
                    validationBatches(), reference);
            TrainingLoop.Outcome outcome = loop.run(objective, new TrainingLoop.Stage(stage + 1, true, stageStart,
                    stageSteps[stage], outputDir.resolve("stage-" + (stage + 1)).resolve("adapter"), false), step,
                    start.resumed());
            // a stage that early stopping ended (train.early_stopping_patience) is whole: the next starts at its start
            step = outcome.cancelled() || stage == stageSteps.length - 1 ? outcome.step() : stageEnd;
            results.add(outcome.result());
            if (outcome.result().adapterDir() != null) {
                listener.onNote("stage " + (stage + 1) + " adapter " + outcome.result().adapterDir());
            }
            if (outcome.cancelled()) {
                boolean whole = outcome.result().adapterDir() != null && stage == stageSteps.length - 1;
                if (!whole) {
                    return new TrainingResult(step, true, false, null, Map.of(), start.checkpoints(), results);
                }
            }
            stageStart = stageEnd;
        }
        Path adapterDir = TrainingOutputs.writeAdapter(model.lora(), TrainingModel.ADAPTER_NAME,
                outputDir.resolve("adapter"), model.baseModelDir(), recipe);
        // The weight averages are each stage's (stage-K/adapter-ema, ...): the last stage's stand beside the result.
        Map<String, Path> averaged = results.isEmpty() ? Map.of() : results.get(results.size() - 1).averagedAdapters();
        return new TrainingResult(step, false, start.alreadyFinished(), adapterDir, averaged, start.checkpoints(),
                results);
    }

    /** Stage {@code stage}'s reference as it starts: from stage 2 on, the policy so far becomes the reference. */
    private StageReference startReference(int stage) {
        boolean adapter = stage > 0 || recipe.model().adapter() != null;
        if (dpo.referenceFree()) {
            return new StageReference(dpo, model, false, null, null);
        }
        if (stage > 0) {
            List<NDArray> reference = referenceAdapter();
            for (int i = 0; i < reference.size(); i++) {
                InPlaceCopy.copy(reference.get(i), parameters.get(i)); // on the device, no host round trip
            }
        }
        StageReference reference = new StageReference(dpo, model, adapter, null, null);
        if (!dpo.precomputeReference()) {
            return reference;
        }
        List<PreferenceSample> pairs = dataset.stages().get(stage);
        ReferenceLogProbs train = ReferenceLogProbs.compute(
                DpoObjective.inOrder(pairs, recipe.train().microBatchSize(), padId), pairs.size(), reference::pass);
        ReferenceLogProbs validation = dataset.validation().isEmpty() ? null
                : ReferenceLogProbs.compute(validationBatches(), dataset.validation().size(), reference::pass);
        return reference.withLogProbs(train, validation);
    }

    /** Stage {@code stage}'s reference as the checkpoint left it (adapter arrays and log-probs, bit for bit). */
    private StageReference resumeReference(int stage, Path checkpoint) {
        boolean adapter = (stage > 0 || recipe.model().adapter() != null) && !dpo.referenceFree();
        Path file = checkpoint.resolve(TrainingCheckpoint.REFERENCE_STATE);
        if (!Files.isRegularFile(file)) {
            if (adapter || dpo.precomputeReference() && !dpo.referenceFree()) {
                throw new IllegalArgumentException("checkpoint " + checkpoint + " has no "
                        + TrainingCheckpoint.REFERENCE_STATE + ": it was not written by a DPO run of this recipe");
            }
            return new StageReference(dpo, model, false, null, null);
        }
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            StageReference.checkLdAlpha(dpo, reader, file);
            if (adapter) {
                List<NDArray> reference = referenceAdapter();
                for (int i = 0; i < reference.size(); i++) {
                    InPlaceCopy.copy(reference.get(i), reader.readFloats("reference." + i));
                }
            }
            return new StageReference(dpo, model, adapter, ReferenceLogProbs.read(reader, "train"),
                    ReferenceLogProbs.read(reader, "validation"));
        }
    }

    /** The reference adapter's arrays, the adapter added (shaped as the trained one) the first time. */
    private List<NDArray> referenceAdapter() {
        LoraModel lora = model.lora();
        if (!lora.adapterNames().contains(StageReference.REFERENCE_ADAPTER)) {
            lora.addAdapter(StageReference.REFERENCE_ADAPTER, lora.config(TrainingModel.ADAPTER_NAME),
                    LoraModel.Init.PEFT_DEFAULT, 0);
        }
        return lora.parameters(StageReference.REFERENCE_ADAPTER);
    }

    private List<PreferenceBatch> validationBatches() {
        if (validationBatches == null) {
            validationBatches = DpoObjective.inOrder(dataset.validation(), recipe.train().microBatchSize(), padId);
        }
        return validationBatches;
    }

    private void describePlan(Path outputDir) {
        listener.onNote(model.describe(recipe));
        String reference = dpo.referenceFree() ? "none (reference_free)"
                : (recipe.model().adapter() != null ? "base + " + recipe.model().adapter() + " (a frozen second copy "
                        + "of the adapter)" : "the base (adapter off)")
                        + (stageSteps.length > 1 ? "; from stage 2 on, the policy the stage before ended with" : "");
        List<String> losses = new ArrayList<>();
        for (int i = 0; i < dpo.loss().size(); i++) {
            double weight = dpo.weights().get(i);
            losses.add((weight == 1 ? "" : weight + " x ") + dpo.loss().get(i));
        }
        listener.onNote(String.format(Locale.ROOT, "DPO: loss %s, beta %s%s%s%s%s%s; reference: %s",
                String.join(" + ", losses), dpo.beta(),
                dpo.fDivergenceType().equals(Recipe.Dpo.REVERSE_KL) ? "" : ", f-divergence " + dpo.fDivergenceType()
                        + (dpo.fDivergenceType().equals(Recipe.Dpo.ALPHA_DIVERGENCE)
                                ? " (alpha " + dpo.fAlphaDivergenceCoef() + ")" : ""),
                (dpo.ldAlpha() == null ? "" : ", ld_alpha " + dpo.ldAlpha())
                        + (dpo.useWeighting() ? ", WPO weights" : ""),
                dpo.lossTypes().contains(DpoLossType.DISCOPOP) ? ", discopop_tau " + dpo.discopopTau() : "",
                dpo.labelSmoothing() > 0 ? ", label smoothing " + dpo.labelSmoothing() : "",
                dpo.sftWeight() > 0 ? ", + " + dpo.sftWeight() + " x SFT" : "", reference));
        listener.onNote("data: " + dataset.report());
        String order = !dpo.stageOrder().equals(Recipe.Dpo.ORDER_MARGIN) ? ""
                : " ordered by margin, largest first (" + (dpo.marginModel() == null ? "score_chosen - score_rejected"
                        : "from " + dpo.marginModel()) + ")";
        listener.onNote(String.format(Locale.ROOT, "stages: %d of %s pairs%s, %d validation pairs",
                dataset.stages().size(), dataset.stages().stream().map(s -> String.valueOf(s.size())).toList(), order,
                dataset.validation().size()));
        listener.onNote(String.format(Locale.ROOT, "training %d steps (%s per stage) of %d x %d pairs, lr %.2e %s, "
                + "output %s", totalSteps, Arrays.toString(stageSteps), recipe.train().microBatchSize(),
                recipe.train().gradientAccumulation(), recipe.train().lr(), recipe.train().schedule(), outputDir));
    }

    private static List<Path> paths(List<String> files) {
        return files.stream().map(DataConfig::file).toList();
    }

    @Override
    public void close() {
        model.close();
    }
}
