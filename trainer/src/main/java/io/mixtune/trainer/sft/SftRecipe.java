package io.mixtune.trainer.sft;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.data.batch.EpochBatches;
import io.mixtune.data.batch.PackedRow;
import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.GradientClipping;
import io.mixtune.trainer.optim.LearningRateSchedule;
import io.mixtune.trainer.optim.LossScaler;
import io.mixtune.trainer.optim.OptimizerUpdate;
import io.mixtune.trainer.recipe.Recipe;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Supervised fine-tuning with (Q)LoRA, read top to bottom: {@link #setup} loads the model, attaches the adapter and
 * tokenizes the data; {@link #train} runs the optimizer steps, evaluating and checkpointing as the recipe says; the
 * outputs are the PEFT adapter, metrics.jsonl, loss.png and the resolved recipe in output_dir.
 *
 * <p>One optimizer step takes gradient_accumulation micro-batches in a row of one endless, seeded stream (epoch after
 * epoch), so where a run stands is its step number alone and a resumed run sees exactly the batches it would have.
 */
public final class SftRecipe implements AutoCloseable {
    public static final String ADAPTER_NAME = "default";

    private final Recipe recipe;
    private final Path outputDir;
    private final PrintStream out;
    private final boolean terminal;
    private final NDManager manager;
    private final CausalLm model;
    private final DataType computeType;
    private final LoraModel lora;
    private final Path baseModelDir;
    private final ChatDataset dataset;
    private final long padId;
    private final List<NDArray> parameters;
    private final Map<Integer, List<TrainingBatch>> epochs = new HashMap<>();
    private List<TrainingBatch> validationBatches; // built at the first evaluation
    private final int microBatchesPerEpoch;
    private final long totalSteps;

    private SftRecipe(Recipe recipe, PrintStream out, boolean terminal) {
        this.recipe = recipe;
        this.out = out;
        this.terminal = terminal;
        Recipe.Train train = recipe.train();
        TrainingModel.check(recipe);
        // The data first, so that bad data (or a tokenizer that does not fit the model) stops the run before the model
        // loads: tokenized turn by turn with the model's tokenizer (a preset's: the bundled Mistral v1 one), once:
        // later runs and `mixtune data prepare` share output_dir/data-cache.
        SampleCache.Loaded data = TrainingData.load(recipe, TrainingData.cacheDir(recipe));
        if (data.note() != null) {
            out.println(data.note());
        }
        dataset = TrainingData.requireTrainingSamples(recipe, data.dataset());

        TrainingModel loaded = TrainingModel.load(recipe, ADAPTER_NAME, out);
        this.outputDir = TrainingOutputs.outputDir(recipe);
        manager = loaded.manager();
        model = loaded.model();
        lora = loaded.lora();
        baseModelDir = loaded.baseModelDir();
        computeType = loaded.computeType();
        ModelConfig config = model.config();
        parameters = lora.parameters(ADAPTER_NAME);
        padId = config.eosTokenId();
        microBatchesPerEpoch = epoch(0).size();
        long epochSteps = ceilDiv((long) microBatchesPerEpoch * (train.epochs() == null ? 1 : train.epochs()),
                train.gradientAccumulation());
        totalSteps = train.maxSteps() != null ? train.maxSteps() : epochSteps;
    }

    public static SftRecipe setup(Recipe recipe, PrintStream out, boolean terminal) {
        return new SftRecipe(recipe, out, terminal);
    }

    /** The micro-batches of one epoch, shuffled by the seed and the epoch number. */
    private List<TrainingBatch> epoch(int epoch) {
        List<TrainingBatch> cached = epochs.get(epoch);
        if (cached != null) {
            return cached;
        }
        Recipe.Train train = recipe.train();
        DataConfig data = recipe.data();
        List<TrainingBatch> batches = new ArrayList<>();
        if (data.packing()) {
            for (List<PackedRow> rows : EpochBatches.packed(dataset.train(), data.maxSeqLen(), train.microBatchSize(),
                    padId, train.seed(), epoch)) {
                batches.add(TrainingBatch.packed(rows));
            }
        } else {
            EpochBatches.lengthGrouped(dataset.train(), train.microBatchSize(), padId, train.seed(), epoch)
                    .forEach(b -> batches.add(TrainingBatch.padded(b)));
        }
        epochs.keySet().removeIf(k -> k < epoch - 1); // keep memory flat over long runs
        epochs.put(epoch, batches);
        return batches;
    }

    private TrainingBatch microBatch(long index) {
        return epoch((int) (index / microBatchesPerEpoch)).get((int) (index % microBatchesPerEpoch));
    }

    public long totalSteps() {
        return totalSteps;
    }

    public ChatDataset dataset() {
        return dataset;
    }

    /** The training run's outcome. */
    public record Result(long steps, double firstLoss, double lastLoss, Double firstEvalLoss, Double lastEvalLoss,
            Path adapterDir) {}

    /**
     * Trains to the last step.
     *
     * @param resumeFrom a checkpoint directory to continue from, or null for a fresh run
     */
    public Result train(Path resumeFrom) {
        Recipe.Train train = recipe.train();
        Path checkpoints = outputDir.resolve("checkpoints");
        AdamW optimizer = new AdamW(parameters, train.adamBeta1(), train.adamBeta2(), train.adamEps(),
                train.weightDecay());
        LearningRateSchedule schedule = new LearningRateSchedule(train.schedule(), train.lr(), train.warmupSteps(),
                (int) totalSteps);
        LossScaler scaler = computeType == DataType.FLOAT16 ? LossScaler.dynamic() : LossScaler.off();
        long step = 0;
        TrainingCheckpoint.State resumed = null;
        if (resumeFrom != null) {
            resumed = TrainingCheckpoint.restore(resumeFrom, parameters, optimizer, scaler);
            step = resumed.step();
            out.printf(Locale.ROOT, "resuming from %s at step %d of %d%n", resumeFrom, step, totalSteps);
        }
        TrainingAverages averages = new TrainingAverages(recipe.averaging(), totalSteps,
                lora.parameterNames(ADAPTER_NAME), parameters);
        if (resumed != null) {
            averages.restore(step, resumed.averages());
        }
        TrainingOutputs.writeResolvedRecipe(recipe, outputDir, resumeFrom != null);
        printPlan();

        double coefficient = train.routerAuxLoss() && model.config().isMixtureOfExperts()
                ? model.config().routerAuxLossCoef() : 0;
        int accumulation = train.gradientAccumulation();
        long availableMicroBatches = train.maxSteps() != null ? Long.MAX_VALUE
                : (long) microBatchesPerEpoch * train.epochs();
        Double firstLoss = null;
        double lastLoss = Double.NaN;
        Double firstEval = null;
        Double lastEval = null;
        try (MetricsLog metrics = new MetricsLog(outputDir.resolve("metrics.jsonl"), resumeFrom == null ? -1 : step)) {
            if (resumeFrom == null && !dataset.validation().isEmpty()) {
                firstEval = evaluate(metrics, 0, averages);
            }
            ProgressLine progress = new ProgressLine(out, terminal, step, totalSteps);
            lora.setTraining(true);
            while (step < totalSteps) {
                long start = System.nanoTime();
                long first = step * accumulation;
                long last = Math.min(first + accumulation, availableMicroBatches);
                List<TrainingBatch> batches = new ArrayList<>();
                for (long index = first; index < last; index++) {
                    batches.add(microBatch(index));
                }
                // Skipped float16 steps do not advance the schedule (HF's Trainer skips the scheduler step too).
                long skipped = scaler.skippedSteps();
                double lr = averages.learningRate(step, s -> schedule.at(s - skipped));
                StepResult result = optimizerStep(model, parameters, batches, coefficient, train.maxGradNorm(),
                        optimizer, lr, manager, train.gradientCheckpointing(), train.seed() * 1_000_003L + first,
                        scaler);
                double stepLoss = result.loss();
                double gradNorm = result.gradNorm();
                double loadBalancing = result.loadBalancing();
                int targets = result.targets();
                long tokens = result.tokens();
                if (result.skipped()) {
                    progress.message(String.format(Locale.ROOT, "step %d: float16 gradients overflowed at loss scale "
                            + "%.0f: update skipped, scale now %.0f", step + 1, result.lossScale(), scaler.scale()));
                }
                if (!result.isFinite() && scaler.gaveUp()) {
                    throw NonFiniteStep.error(step + 1, stepLoss, gradNorm, lora, ADAPTER_NAME, checkpoints);
                }
                step++;
                averages.afterStep(step, parameters);
                double seconds = (System.nanoTime() - start) / 1e9;
                if (firstLoss == null) {
                    firstLoss = stepLoss;
                }
                lastLoss = stepLoss;
                if (step % train.logEvery() == 0 || step == totalSteps) {
                    ObjectNode record = metrics.record(step);
                    record.put("loss", stepLoss);
                    if (coefficient > 0) {
                        record.put("aux_loss", loadBalancing);
                    }
                    record.put("lr", lr);
                    record.put("grad_norm", gradNorm);
                    if (scaler.enabled()) {
                        record.put("loss_scale", result.lossScale());
                        record.put("skipped", result.skipped());
                    }
                    record.put("tokens", tokens);
                    record.put("target_tokens", targets);
                    record.put("tokens_per_second", tokens / seconds);
                    record.put("epoch", (double) last / microBatchesPerEpoch);
                    record.put("memory_mb", TrainingOutputs.residentMegabytes());
                    metrics.write(record);
                    progress.step(step, stepLoss, lr, tokens / seconds);
                }
                boolean end = step == totalSteps;
                if (!dataset.validation().isEmpty() && (end || train.evalEvery() > 0 && step % train.evalEvery() == 0)) {
                    lastEval = evaluate(metrics, step, averages);
                    progress.message(String.format(Locale.ROOT, "step %d: eval_loss %.4f  perplexity %.2f", step,
                            lastEval, Math.exp(lastEval)));
                }
                if (end || train.saveEvery() > 0 && step % train.saveEvery() == 0) {
                    Path saved = saveCheckpoint(checkpoints, step, optimizer, scaler, averages);
                    progress.message("step " + step + ": checkpoint " + saved);
                }
            }
            progress.finish();
        }
        Path adapterDir = writeAdapter("adapter");
        averages.current().forEach((name, weights) -> averages.withWeights(parameters, weights,
                () -> writeAdapter("adapter-" + name)));
        LossPlot.write(outputDir.resolve("metrics.jsonl"), outputDir.resolve("loss.png"));
        return new Result(step, firstLoss == null ? Double.NaN : firstLoss, lastLoss, firstEval, lastEval, adapterDir);
    }

    /**
     * What one optimizer step measured, at the weights before its update.
     *
     * @param loss the step objective: summed cross-entropy / targets + coefficient x loadBalancing
     * @param crossEntropy summed cross-entropy / targets (the mean over the step's target tokens)
     * @param loadBalancing the router load-balancing loss averaged over micro-batches, before the coefficient (0 for a
     *     dense model); reported even when the coefficient is 0
     * @param gradNorm the global gradient norm before clipping (unscaled)
     * @param lossScale the float16 loss scale the step ran at (1 in float32)
     * @param skipped float16 only: the gradients overflowed, the update was skipped and the scale halved
     */
    public record StepResult(double loss, double crossEntropy, double loadBalancing, double gradNorm, int targets,
            long tokens, double lossScale, boolean skipped) {
        boolean isFinite() {
            return Double.isFinite(loss) && Double.isFinite(gradNorm);
        }
    }

    /**
     * One optimizer step over gradient_accumulation micro-batches, as HF's Trainer with num_items_in_batch: zero the
     * gradients; per micro-batch, backward of its summed cross-entropy / the step's target count plus coefficient x
     * its load-balancing loss / micro-batches; clip the global norm; AdamW at lr. When the loss or the norm is not
     * finite the weights and the optimizer are left as they were, for the caller to stop. In float16 the objective is
     * multiplied by the scaler's scale before backward and the gradients divided by it before clipping; a step with
     * non-finite gradients is then skipped and the scaler told ({@link LossScaler}).
     *
     * @param gradientCheckpointing recompute each layer in backward instead of keeping its activations
     * @param dropoutSeed micro-batch j draws its LoRA dropout masks from dropoutSeed + j
     */
    public static StepResult optimizerStep(CausalLm model, List<NDArray> parameters, List<TrainingBatch> batches,
            double auxCoefficient, double maxGradNorm, AdamW optimizer, double lr, NDManager manager,
            boolean gradientCheckpointing, long dropoutSeed, LossScaler scaler) {
        int targets = 0;
        long tokens = 0;
        for (TrainingBatch batch : batches) {
            targets += batch.targetCount();
            tokens += batch.realTokens();
        }
        GradientClipping.zero(parameters);
        double scale = scaler.scale();
        double crossEntropy = 0;
        double loadBalancing = 0;
        for (int j = 0; j < batches.size(); j++) {
            // Summed cross-entropy over the step's target tokens (HF's num_items_in_batch), plus the load-balancing
            // loss averaged over micro-batches. Dropout is seeded per micro-batch (and layer), so a resumed run draws
            // the same masks.
            CausalLmLoss.Values values = CausalLmLoss.backward(model, batches.get(j), Math.max(1, targets) / scale,
                    auxCoefficient / batches.size() * scale, gradientCheckpointing, dropoutSeed + j, manager);
            crossEntropy += values.crossEntropySum();
            if (!Double.isNaN(values.loadBalancing())) {
                loadBalancing += values.loadBalancing() / batches.size();
            }
        }
        double meanCrossEntropy = crossEntropy / Math.max(1, targets);
        double stepLoss = meanCrossEntropy + (auxCoefficient > 0 ? auxCoefficient * loadBalancing : 0);
        OptimizerUpdate.Outcome update = OptimizerUpdate.apply(parameters, stepLoss, maxGradNorm, optimizer, lr,
                scaler);
        return new StepResult(stepLoss, meanCrossEntropy, loadBalancing, update.gradNorm(), targets, tokens, scale,
                update.skipped());
    }

    /**
     * Writes the validation loss at {@code step} to metrics.jsonl, and beside it (eval_loss_ema, ...) the loss of each
     * weight average that holds something; returns the raw weights' loss.
     */
    private double evaluate(MetricsLog metrics, long step, TrainingAverages averages) {
        ObjectNode record = metrics.record(step);
        Evaluation.Result result = validationLoss();
        record.put("eval_target_tokens", result.targets());
        record.put("eval_loss", result.loss());
        record.put("eval_perplexity", result.perplexity());
        if (step > 0) {
            averages.current().forEach((name, weights) -> averages.withWeights(parameters, weights,
                    () -> record.put("eval_loss_" + name, validationLoss().loss())));
        }
        metrics.write(record);
        return result.loss();
    }

    /**
     * Mean cross-entropy per target token of the validation set ({@link Evaluation}, as `mixtune eval` computes it),
     * adapters as they are, no dropout; the adapters are back in training mode afterwards.
     */
    private Evaluation.Result validationLoss() {
        if (validationBatches == null) {
            DataConfig data = recipe.data();
            validationBatches = Evaluation.batches(dataset.validation(), data.packing(), data.maxSeqLen(),
                    recipe.train().microBatchSize(), padId);
        }
        lora.setTraining(false);
        Evaluation.Result result = Evaluation.of(model, validationBatches, manager);
        lora.setTraining(true);
        return result;
    }

    private Path saveCheckpoint(Path checkpoints, long step, AdamW optimizer, LossScaler scaler,
            TrainingAverages averages) {
        TrainingCheckpoint.State state = TrainingCheckpoint.State.of(step, parameters, optimizer, scaler,
                averages.state());
        return TrainingCheckpoint.save(checkpoints, state, lora, ADAPTER_NAME, baseModelDir, recipe.train().keepLast(),
                dir -> averages.current().forEach((name, weights) -> averages.withWeights(parameters, weights,
                        () -> PeftAdapter.save(lora, ADAPTER_NAME, dir.resolve("adapter-" + name),
                                baseModelDir.toAbsolutePath().toString()))));
    }

    /** output_dir/{@code name}: the adapter as the parameters hold it now, replaced whole (written beside, renamed). */
    private Path writeAdapter(String name) {
        return TrainingOutputs.writeAdapter(lora, ADAPTER_NAME, outputDir.resolve(name), baseModelDir, recipe);
    }

    private void printPlan() {
        String efficiency = recipe.data().packing()
                ? String.format(Locale.ROOT, ", packing efficiency %.1f%%", 100 * packingEfficiency()) : "";
        out.println(TrainingModel.describe(recipe, model, baseModelDir, parameters));
        out.printf(Locale.ROOT, "data: %s; %d train / %d validation samples, %d micro-batches an epoch%s%n",
                dataset.report(), dataset.train().size(), dataset.validation().size(), microBatchesPerEpoch,
                efficiency);
        out.printf(Locale.ROOT, "training %d steps of %d x %d, lr %.2e %s, output %s%n", totalSteps,
                recipe.train().microBatchSize(), recipe.train().gradientAccumulation(), recipe.train().lr(),
                recipe.train().schedule(), outputDir);
    }

    private double packingEfficiency() {
        long real = 0;
        long total = 0;
        for (TrainingBatch batch : epoch(0)) {
            real += batch.realTokens();
            total += (long) batch.rows() * recipe.data().maxSeqLen(); // rows are cut after their last real token
        }
        return total == 0 ? 0 : (double) real / total;
    }

    private static long ceilDiv(long a, long b) {
        return (a + b - 1) / b;
    }

    @Override
    public void close() {
        model.close();
        manager.close();
    }
}
