package io.mixtune.trainer.dpo;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.PreferenceDataset;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.data.preference.PreferenceTokenizer;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.LearningRateSchedule;
import io.mixtune.trainer.optim.LossScaler;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeValueException;
import io.mixtune.trainer.sft.LossPlot;
import io.mixtune.trainer.sft.MetricsLog;
import io.mixtune.trainer.sft.NonFiniteStep;
import io.mixtune.trainer.sft.ProgressLine;
import io.mixtune.trainer.sft.SftRecipe;
import io.mixtune.trainer.sft.TrainingCheckpoint;
import io.mixtune.trainer.sft.TrainingData;
import io.mixtune.trainer.sft.TrainingModel;
import io.mixtune.trainer.sft.TrainingOutputs;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;

/**
 * Direct Preference Optimization (Rafailov et al. 2023) with (Q)LoRA, and Stage-DPO (WizardLM-2): read top to bottom
 * as {@link SftRecipe}. {@link #setup} loads the model, attaches the adapter and tokenizes the preference pairs into
 * their stages; {@link #train} runs the stages one after the other; each stage is a loop of optimizer steps with a
 * fresh AdamW and schedule against a frozen reference, evaluating and checkpointing as the recipe says, and ends by
 * writing its adapter to output_dir/stage-K/adapter. The final adapter (output_dir/adapter) is the last stage's.
 *
 * <p>The reference is never a second copy of the model. Stage 1's is the base with the adapter switched off, or, when
 * the recipe starts from an SFT adapter (model.adapter), that adapter loaded a second time and frozen (TRL's
 * ref_adapter_name). Stage K's is the policy stage K-1 ended with, copied into that second adapter. Its log-probs are
 * computed once when the stage starts (precompute_reference) and kept in the checkpoints.
 *
 * <p>Steps are numbered across stages (metrics.jsonl and checkpoints use one count), so where a run stands is its step
 * alone: a resumed run finds the stage, the step within it and the micro-batches it would have seen.
 */
public final class DpoRecipe implements AutoCloseable {
    public static final String ADAPTER_NAME = SftRecipe.ADAPTER_NAME;
    /** The frozen reference, when it is not the bare base: a second adapter beside the trained one. */
    static final String REFERENCE_ADAPTER = "reference";
    /** In a checkpoint: the reference adapter's arrays and the stage's reference log-probs. */
    static final String REFERENCE_STATE = TrainingCheckpoint.REFERENCE_STATE;

    private final Recipe recipe;
    private final Recipe.Dpo dpo;
    private final Path outputDir;
    private final PrintStream out;
    private final boolean terminal;
    private final TrainingModel loaded;
    private final NDManager manager;
    private final CausalLm model;
    private final LoraModel lora;
    private final Path baseModelDir;
    private final List<NDArray> parameters;
    private final PreferenceDataset dataset;
    private final long padId;
    private final long[] stageSteps;
    private final long totalSteps;
    private final Map<String, int[]> epochOrders = new TreeMap<>();
    private List<PreferenceBatch> validationBatches;

    private DpoRecipe(Recipe recipe, PrintStream out, boolean terminal) {
        this.recipe = recipe;
        this.dpo = recipe.dpo();
        this.out = out;
        this.terminal = terminal;
        Recipe.Train train = recipe.train();
        TrainingModel.check(recipe);
        dataset = loadPairs(recipe);

        loaded = TrainingModel.load(recipe, ADAPTER_NAME, out);
        outputDir = TrainingOutputs.outputDir(recipe);
        manager = loaded.manager();
        model = loaded.model();
        lora = loaded.lora();
        baseModelDir = loaded.baseModelDir();
        parameters = lora.parameters(ADAPTER_NAME);
        if (recipe.model().adapter() != null && !dpo.referenceFree()) {
            PeftAdapter.load(lora, Path.of(recipe.model().adapter()), REFERENCE_ADAPTER);
        }
        padId = model.config().eosTokenId();
        stageSteps = new long[dataset.stages().size()];
        for (int k = 0; k < stageSteps.length; k++) {
            long epochSteps = ceilDiv(microBatchesPerEpoch(k) * (train.epochs() == null ? 1 : train.epochs()),
                    train.gradientAccumulation());
            stageSteps[k] = train.maxSteps() != null ? train.maxSteps() : epochSteps;
        }
        totalSteps = Arrays.stream(stageSteps).sum();
    }

    /**
     * The preference pairs, before the model loads so that bad data stops the run first (`mixtune validate` reads them
     * the same way): tokenized with the model's tokenizer and the recipe's template, one pool split into stages in file
     * order or a file per stage, validation from its own files or held out of each stage (seeded).
     */
    public static PreferenceDataset loadPairs(Recipe recipe) {
        Recipe.Dpo dpo = recipe.dpo();
        SampleCache.TokenizerFile tokenizerFile = TrainingData.tokenizer(recipe);
        DataConfig data = recipe.data();
        PreferenceTokenizer tokenizer = new PreferenceTokenizer(
                data.chatTemplate(tokenizerFile), tokenizerFile.open(),
                data.maxSeqLen(), tokenizerFile.bosId());
        List<List<Path>> stageFiles = dpo.stageFiles().isEmpty() ? List.of(paths(data.files()))
                : dpo.stageFiles().stream().map(file -> List.of(DataConfig.file(file))).toList();
        try {
            return PreferenceDataset.load(stageFiles, dpo.stageCount(), paths(data.validationFiles()),
                    data.validationRatio(), recipe.train().seed(), tokenizer, data.skipInvalid());
        } catch (PreferenceDataset.EmptyStageException e) {
            // The files that stage reads are the recipe's to fix: reported at the key that names them.
            throw new RecipeValueException(dpo.stageFiles().isEmpty() ? "data.files" : "dpo.stages", e.getMessage());
        }
    }

    public static DpoRecipe setup(Recipe recipe, PrintStream out, boolean terminal) {
        return new DpoRecipe(recipe, out, terminal);
    }

    public long totalSteps() {
        return totalSteps;
    }

    public PreferenceDataset dataset() {
        return dataset;
    }

    /**
     * How a stage went in this run (a stage finished before a resume has none).
     *
     * @param metrics the TRL metrics of the stage's last step
     * @param evalMetrics the validation metrics at the stage's end (eval_ names), or null without validation pairs
     */
    public record StageResult(int stage, long lastStep, double firstLoss, double lastLoss, Map<String, Double> metrics,
            Map<String, Double> evalMetrics, Path adapterDir) {}

    /** The training run's outcome. */
    public record Result(long steps, List<StageResult> stages, Path adapterDir) {}

    /**
     * Trains every stage to its last step.
     *
     * @param resumeFrom a checkpoint directory to continue from, or null for a fresh run
     */
    public Result train(Path resumeFrom) {
        Recipe.Train train = recipe.train();
        Path checkpoints = outputDir.resolve("checkpoints");
        long step = 0;
        TrainingCheckpoint.State resumed = null;
        if (resumeFrom != null) {
            resumed = TrainingCheckpoint.load(resumeFrom, TrainingCheckpoint.shapesOf(parameters));
            resumed.restoreParameters(parameters);
            step = resumed.step();
            out.printf(Locale.ROOT, "resuming from %s at step %d of %d%n", resumeFrom, step, totalSteps);
        }
        TrainingOutputs.writeResolvedRecipe(recipe, outputDir, resumeFrom != null);
        printPlan();

        double coefficient = train.routerAuxLoss() && model.config().isMixtureOfExperts()
                ? model.config().routerAuxLossCoef() : 0;
        int accumulation = train.gradientAccumulation();
        List<StageResult> results = new ArrayList<>();
        try (MetricsLog metrics = new MetricsLog(outputDir.resolve("metrics.jsonl"), resumeFrom == null ? -1 : step)) {
            ProgressLine progress = new ProgressLine(out, terminal, step, totalSteps);
            long stageStart = 0;
            for (int stage = 0; stage < stageSteps.length; stage++) {
                long stageEnd = stageStart + stageSteps[stage];
                if (step >= stageEnd) {
                    stageStart = stageEnd; // finished before the run was stopped
                    continue;
                }
                // A fresh optimizer and schedule; the reference set up for this stage, or as the checkpoint left it.
                AdamW optimizer = new AdamW(parameters, train.adamBeta1(), train.adamBeta2(), train.adamEps(),
                        train.weightDecay());
                LossScaler scaler = model.computeType() == DataType.FLOAT16
                        ? LossScaler.dynamic() : LossScaler.off();
                LearningRateSchedule schedule = new LearningRateSchedule(train.schedule(), train.lr(),
                        train.warmupSteps(), (int) stageSteps[stage]);
                StageReference reference;
                if (step > stageStart) {
                    resumed.restore(parameters, optimizer, scaler);
                    reference = resumeReference(stage, resumeFrom);
                } else {
                    progress.message(String.format(Locale.ROOT, "stage %d of %d: %d pairs, %d steps", stage + 1,
                            stageSteps.length, dataset.stages().get(stage).size(), stageSteps[stage]));
                    reference = startReference(stage);
                }
                long availableMicroBatches = train.maxSteps() != null ? Long.MAX_VALUE
                        : microBatchesPerEpoch(stage) * train.epochs();
                Double firstLoss = null;
                double lastLoss = Double.NaN;
                Map<String, Double> lastMetrics = Map.of();
                Map<String, Double> evalMetrics = null;
                lora.setTraining(true);
                while (step < stageEnd) {
                    long start = System.nanoTime();
                    long stageStep = step - stageStart;
                    long first = stageStep * accumulation;
                    long last = Math.min(first + accumulation, availableMicroBatches);
                    List<PreferenceBatch> batches = new ArrayList<>();
                    for (long index = first; index < last; index++) {
                        batches.add(microBatch(stage, index));
                    }
                    // Skipped float16 steps do not advance the schedule (HF's Trainer skips the scheduler step too).
                    double lr = schedule.at(stageStep - scaler.skippedSteps());
                    DpoStep.StepResult result = DpoStep.optimizerStep(model, parameters, dpo, batches,
                            batch -> reference.of(batch, reference.train), coefficient, train.maxGradNorm(), optimizer,
                            lr, manager, train.gradientCheckpointing(),
                            train.seed() * 1_000_003L + stageStart * accumulation + first, scaler);
                    if (result.skipped()) {
                        progress.message(String.format(Locale.ROOT, "step %d: float16 gradients overflowed at loss "
                                + "scale %.0f: update skipped, scale now %.0f", step + 1, result.lossScale(),
                                scaler.scale()));
                    }
                    if (!result.isFinite() && scaler.gaveUp()) {
                        throw NonFiniteStep.error(step + 1, result.loss(), result.gradNorm(), lora, ADAPTER_NAME,
                                checkpoints);
                    }
                    step++;
                    double seconds = (System.nanoTime() - start) / 1e9;
                    firstLoss = firstLoss == null ? result.loss() : firstLoss;
                    lastLoss = result.loss();
                    lastMetrics = result.metrics().values();
                    if (step % train.logEvery() == 0 || step == stageEnd) {
                        ObjectNode record = metrics.record(step);
                        record.put("stage", stage + 1);
                        record.put("loss", result.loss());
                        result.metrics().put(record, "");
                        if (coefficient > 0) {
                            record.put("aux_loss", result.loadBalancing());
                        }
                        record.put("lr", lr);
                        record.put("grad_norm", result.gradNorm());
                        record.put("tokens", result.tokens());
                        record.put("tokens_per_second", result.tokens() / seconds);
                        record.put("epoch", (double) last / microBatchesPerEpoch(stage));
                        record.put("memory_mb", TrainingOutputs.residentMegabytes());
                        if (scaler.enabled()) {
                            record.put("loss_scale", result.lossScale());
                            record.put("skipped", result.skipped());
                        }
                        metrics.write(record);
                        progress.step(step, result.loss(), lr, result.tokens() / seconds,
                                String.format(Locale.ROOT, "  acc %.2f  margin %.3f", result.metrics().accuracy(),
                                        result.metrics().margin()));
                    }
                    boolean end = step == stageEnd;
                    if (!dataset.validation().isEmpty()
                            && (end || train.evalEvery() > 0 && step % train.evalEvery() == 0)) {
                        evalMetrics = evaluate(metrics, step, stage, reference);
                        progress.message(String.format(Locale.ROOT, "step %d: eval_loss %.4f  "
                                + "eval_rewards/accuracies %.3f  eval_rewards/margins %.4f", step,
                                evalMetrics.get("eval_loss"), evalMetrics.get("eval_rewards/accuracies"),
                                evalMetrics.get("eval_rewards/margins")));
                    }
                    Path stageAdapter = null;
                    if (end) {
                        stageAdapter = TrainingOutputs.writeAdapter(lora, ADAPTER_NAME,
                                outputDir.resolve("stage-" + (stage + 1)).resolve("adapter"), baseModelDir, recipe);
                        results.add(new StageResult(stage + 1, step, firstLoss, lastLoss, lastMetrics, evalMetrics,
                                stageAdapter));
                    }
                    if (end || train.saveEvery() > 0 && step % train.saveEvery() == 0) {
                        Path saved = TrainingCheckpoint.save(checkpoints,
                                TrainingCheckpoint.State.of(step, parameters, optimizer, scaler, Map.of()), lora,
                                ADAPTER_NAME, baseModelDir, train.keepLast(),
                                dir -> reference.save(dir.resolve(REFERENCE_STATE)));
                        progress.message("step " + step + ": checkpoint " + saved
                                + (stageAdapter == null ? "" : ", stage " + (stage + 1) + " adapter " + stageAdapter));
                    }
                }
                stageStart = stageEnd;
            }
            progress.finish();
        }
        Path adapterDir = TrainingOutputs.writeAdapter(lora, ADAPTER_NAME, outputDir.resolve("adapter"), baseModelDir,
                recipe);
        LossPlot.write(outputDir.resolve("metrics.jsonl"), outputDir.resolve("loss.png"));
        return new Result(step, results, adapterDir);
    }

    /**
     * A stage's reference: the reference adapter or the bare base, and, when precomputed, its log-probs of the stage's
     * pairs and of the validation pairs.
     */
    private final class StageReference {
        private final boolean adapter;
        private final ReferenceLogProbs train;
        private final ReferenceLogProbs validation;

        StageReference(boolean adapter, ReferenceLogProbs train, ReferenceLogProbs validation) {
            this.adapter = adapter;
            this.train = train;
            this.validation = validation;
        }

        /** The reference's log-probs of a batch's rows: zeros without a reference, else precomputed or computed now. */
        float[] of(PreferenceBatch batch, ReferenceLogProbs precomputed) {
            if (dpo.referenceFree()) {
                return new float[2 * batch.pairs()];
            }
            return precomputed != null ? precomputed.of(batch) : pass(batch);
        }

        /**
         * A forward pass of the reference, without dropout (it is a frozen model): the trained adapter swapped for
         * the reference adapter, or all adapters off. The adapters are back in training mode afterwards.
         */
        float[] pass(PreferenceBatch batch) {
            lora.setTraining(false);
            if (adapter) {
                lora.setActiveAdapter(REFERENCE_ADAPTER);
            } else {
                lora.setAdaptersEnabled(false);
            }
            try {
                return DpoStep.sequenceLogProbs(model, batch, manager);
            } finally {
                if (adapter) {
                    lora.setActiveAdapter(ADAPTER_NAME);
                } else {
                    lora.setAdaptersEnabled(true);
                }
                lora.setTraining(true);
            }
        }

        /** Writes what a resumed run needs to go on with this reference, exactly. */
        void save(Path file) {
            List<TensorSpec> specs = new ArrayList<>();
            Map<String, float[]> data = new TreeMap<>();
            if (adapter && !dpo.referenceFree()) {
                List<NDArray> arrays = lora.parameters(REFERENCE_ADAPTER);
                for (int i = 0; i < arrays.size(); i++) {
                    specs.add(new TensorSpec("reference." + i, DType.F32, arrays.get(i).getShape().getShape()));
                    data.put("reference." + i, arrays.get(i).toFloatArray());
                }
            }
            if (train != null) {
                train.put("train", specs, data);
            }
            if (validation != null) {
                validation.put("validation", specs, data);
            }
            if (!specs.isEmpty()) {
                SafetensorsWriter.writeFile(file, specs, spec -> data.get(spec.name()));
            }
        }
    }

    /** Stage {@code stage}'s reference as it starts: from stage 2 on, the policy so far becomes the reference. */
    private StageReference startReference(int stage) {
        boolean adapter = stage > 0 || recipe.model().adapter() != null;
        if (dpo.referenceFree()) {
            return new StageReference(false, null, null);
        }
        if (stage > 0) {
            List<NDArray> reference = referenceAdapter();
            for (int i = 0; i < reference.size(); i++) {
                reference.get(i).set(parameters.get(i).toFloatArray());
            }
        }
        StageReference reference = new StageReference(adapter, null, null);
        if (!dpo.precomputeReference()) {
            return reference;
        }
        List<PreferenceSample> pairs = dataset.stages().get(stage);
        ReferenceLogProbs train = ReferenceLogProbs.compute(inOrder(pairs), pairs.size(), reference::pass);
        ReferenceLogProbs validation = dataset.validation().isEmpty() ? null
                : ReferenceLogProbs.compute(validationBatches(), dataset.validation().size(), reference::pass);
        return new StageReference(adapter, train, validation);
    }

    /** Stage {@code stage}'s reference as the checkpoint left it (adapter arrays and log-probs, bit for bit). */
    private StageReference resumeReference(int stage, Path checkpoint) {
        boolean adapter = (stage > 0 || recipe.model().adapter() != null) && !dpo.referenceFree();
        Path file = checkpoint.resolve(REFERENCE_STATE);
        if (!Files.isRegularFile(file)) {
            if (adapter || dpo.precomputeReference() && !dpo.referenceFree()) {
                throw new IllegalArgumentException("checkpoint " + checkpoint + " has no " + REFERENCE_STATE
                        + ": it was not written by a DPO run of this recipe");
            }
            return new StageReference(false, null, null);
        }
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            if (adapter) {
                List<NDArray> reference = referenceAdapter();
                for (int i = 0; i < reference.size(); i++) {
                    reference.get(i).set(reader.readFloats("reference." + i));
                }
            }
            return new StageReference(adapter, ReferenceLogProbs.read(reader, "train"),
                    ReferenceLogProbs.read(reader, "validation"));
        }
    }

    /** The reference adapter's arrays, the adapter added (shaped as the trained one) the first time. */
    private List<NDArray> referenceAdapter() {
        if (!lora.adapterNames().contains(REFERENCE_ADAPTER)) {
            lora.addAdapter(REFERENCE_ADAPTER, lora.config(ADAPTER_NAME), LoraModel.Init.PEFT_DEFAULT, 0);
        }
        return lora.parameters(REFERENCE_ADAPTER);
    }

    /**
     * Writes the validation metrics at {@code step} to metrics.jsonl under TRL's eval_ names, the policy without
     * dropout against the stage's reference; returns them.
     */
    private Map<String, Double> evaluate(MetricsLog metrics, long step, int stage, StageReference reference) {
        DpoMetrics totals = new DpoMetrics(dpo.beta());
        for (PreferenceBatch batch : validationBatches()) {
            float[] referenceLogProbs = reference.of(batch, reference.validation);
            lora.setTraining(false);
            try (NDManager evalManager = manager.newSubManager()) {
                DpoStep.Terms terms = DpoStep.of(model, dpo, batch, referenceLogProbs, 0, evalManager);
                totals.add(terms.policy(), referenceLogProbs, terms.objective().getFloat(), terms.nll());
            }
        }
        lora.setTraining(true);
        ObjectNode record = metrics.record(step);
        record.put("stage", stage + 1);
        record.put("eval_loss", totals.dpoLoss());
        totals.put(record, "eval_");
        metrics.write(record);
        Map<String, Double> values = new LinkedHashMap<>();
        values.put("eval_loss", totals.dpoLoss());
        totals.values().forEach((name, value) -> values.put("eval_" + name, value));
        return values;
    }

    private long microBatchesPerEpoch(int stage) {
        return ceilDiv(dataset.stages().get(stage).size(), recipe.train().microBatchSize());
    }

    /**
     * Micro-batch {@code index} of stage {@code stage}'s endless stream: epoch after epoch, each a shuffle of the
     * stage's pairs seeded by the seed, the stage and the epoch (TRL samples pairs at random too).
     */
    private PreferenceBatch microBatch(int stage, long index) {
        List<PreferenceSample> pairs = dataset.stages().get(stage);
        long perEpoch = microBatchesPerEpoch(stage);
        int[] order = epochOrder(stage, index / perEpoch);
        int size = recipe.train().microBatchSize();
        int from = (int) (index % perEpoch) * size;
        return batchOf(pairs, Arrays.copyOfRange(order, from, Math.min(order.length, from + size)));
    }

    private int[] epochOrder(int stage, long epoch) {
        String key = stage + "/" + epoch;
        int[] cached = epochOrders.get(key);
        if (cached != null) {
            return cached;
        }
        List<Integer> order = new ArrayList<>();
        for (int i = 0; i < dataset.stages().get(stage).size(); i++) {
            order.add(i);
        }
        Collections.shuffle(order, new Random(recipe.train().seed() * 1_000_003L + 1_009L * stage + epoch));
        epochOrders.clear(); // one epoch at a time is all a run reads
        int[] shuffled = order.stream().mapToInt(Integer::intValue).toArray();
        epochOrders.put(key, shuffled);
        return shuffled;
    }

    /** Micro-batches of the pairs in their order, for the reference pass and evaluation. */
    private List<PreferenceBatch> inOrder(List<PreferenceSample> pairs) {
        List<PreferenceBatch> batches = new ArrayList<>();
        int size = recipe.train().microBatchSize();
        for (int from = 0; from < pairs.size(); from += size) {
            int first = from;
            int[] indices = new int[Math.min(size, pairs.size() - from)];
            Arrays.setAll(indices, i -> first + i);
            batches.add(batchOf(pairs, indices));
        }
        return batches;
    }

    private List<PreferenceBatch> validationBatches() {
        if (validationBatches == null) {
            validationBatches = inOrder(dataset.validation());
        }
        return validationBatches;
    }

    private PreferenceBatch batchOf(List<PreferenceSample> pairs, int[] indices) {
        List<PreferenceSample> samples = new ArrayList<>();
        for (int index : indices) {
            samples.add(pairs.get(index));
        }
        return PreferenceBatch.of(samples, indices, padId);
    }

    private void printPlan() {
        out.println(TrainingModel.describe(recipe, model, baseModelDir, parameters));
        String reference = dpo.referenceFree() ? "none (reference_free)"
                : (recipe.model().adapter() != null ? "base + " + recipe.model().adapter() + " (a frozen second copy "
                        + "of the adapter)" : "the base (adapter off)")
                        + (stageSteps.length > 1 ? "; from stage 2 on, the policy the stage before ended with" : "");
        out.printf(Locale.ROOT, "DPO: loss %s, beta %s%s%s; reference: %s%n", dpo.loss(), dpo.beta(),
                dpo.labelSmoothing() > 0 ? ", label smoothing " + dpo.labelSmoothing() : "",
                dpo.sftWeight() > 0 ? ", + " + dpo.sftWeight() + " x SFT" : "", reference);
        out.println("data: " + dataset.report());
        out.printf(Locale.ROOT, "stages: %d of %s pairs, %d validation pairs%n", dataset.stages().size(),
                dataset.stages().stream().map(s -> String.valueOf(s.size())).toList(), dataset.validation().size());
        out.printf(Locale.ROOT, "training %d steps (%s per stage) of %d x %d pairs, lr %.2e %s, output %s%n",
                totalSteps, Arrays.toString(stageSteps), recipe.train().microBatchSize(),
                recipe.train().gradientAccumulation(), recipe.train().lr(), recipe.train().schedule(), outputDir);
    }

    private static List<Path> paths(List<String> files) {
        return files.stream().map(DataConfig::file).toList();
    }

    private static long ceilDiv(long a, long b) {
        return (a + b - 1) / b;
    }

    @Override
    public void close() {
        loaded.close();
    }
}
