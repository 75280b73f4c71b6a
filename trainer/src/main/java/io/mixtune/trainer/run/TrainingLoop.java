package io.mixtune.trainer.run;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.trainer.Refusal;
import io.mixtune.trainer.chat.SavedTokenizer;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.AdamW8bit;
import io.mixtune.trainer.optim.LearningRateSchedule;
import io.mixtune.trainer.optim.LossScaler;
import io.mixtune.trainer.recipe.EvaluationMetrics;
import io.mixtune.trainer.recipe.Recipe;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalLong;
import java.util.function.BooleanSupplier;

/**
 * The training loop, once for every method: optimizer steps of gradient_accumulation micro-batches drawn from the
 * objective's endless stream, an epoch's last step taking what is left of it ({@link EpochSteps}), the schedule (skipped float16 steps do not advance it), clipping and AdamW, the NaN/Inf
 * rule, evaluation and checkpoints at the recipe's cadence, the weight averages (EMA, SWA, LaWA), resume, and the
 * stage's adapters at its end. A method brings its {@link Objective}; a Stage-DPO stage is one {@link #run} with a
 * fresh AdamW, schedule and averages, against the reference the method set before.
 *
 * <p>Where a run stands is its step alone: the micro-batches of step s follow from s ({@link EpochSteps}), and their
 * dropout is seeded by the first of them, so a resumed run sees exactly what the stopped one would have.
 */
public final class TrainingLoop {
    private final Recipe recipe;
    private final TrainingModel model;
    private final Path outputDir;
    private final TrainingListener listener;
    private final BooleanSupplier cancelled;
    private final long totalSteps;
    private final List<NDArray> parameters;
    /** train.eval_prompts, answered at each evaluation; null without them. */
    private final EvalSamples samples;
    /** Real tokens read so far, counted across stages (TRL's num_tokens); empty when resumed from a run before it. */
    private OptionalLong numTokens = OptionalLong.of(0);
    /** The tokenizer files every checkpoint's adapters carry, read once (at the first checkpoint). */
    private SavedTokenizer.Contents tokenizerFiles;

    /**
     * @param totalSteps the run's last step, over all stages
     * @param cancelled asked after every step: true stops the run there, leaving a checkpoint of that step
     */
    public TrainingLoop(Recipe recipe, TrainingModel model, Path outputDir, long totalSteps,
            TrainingListener listener, BooleanSupplier cancelled) {
        this.recipe = recipe;
        this.model = model;
        this.outputDir = outputDir;
        this.listener = listener;
        this.cancelled = cancelled;
        this.totalSteps = totalSteps;
        this.parameters = model.lora().parameters(TrainingModel.ADAPTER_NAME);
        this.samples = EvalSamples.of(recipe, model);
    }

    /**
     * The steps of one stage.
     *
     * @param stage 1-based; recorded in every metrics record when {@code recordStage} (Stage-DPO)
     * @param start the step before the stage's first (steps count across stages)
     * @param adapterDir where the stage's adapter goes at its end (its averages beside it, adapter-ema ...)
     * @param evaluateFirst evaluate before the first step (when the run starts there)
     */
    public record Stage(int stage, boolean recordStage, long start, long steps, Path adapterDir,
            boolean evaluateFirst) {
        public long end() {
            return start + steps;
        }
    }

    /**
     * Where the loop stopped, and how the stage went.
     *
     * @param cancelled a listener cancelled the run at {@code step}: inside the stage (then no adapter was written),
     *     or at its last step (the stage is whole, and the run goes no further)
     */
    public record Outcome(long step, boolean cancelled, TrainingResult.StageResult result) {}

    /**
     * Runs the stage from {@code step} (its start, or where a resumed checkpoint left it) to its end.
     *
     * @param resumed the checkpoint state to continue from when {@code step} is inside the stage, else null
     */
    public <B, M extends Objective.Measured> Outcome run(Objective<B, M> objective, Stage stage, long step,
            TrainingCheckpoint.State resumed) {
        Recipe.Train train = recipe.train();
        LoraModel lora = model.lora();
        Path checkpoints = outputDir.resolve(TrainingOutputs.CHECKPOINTS_DIR);
        AdamW optimizer = new AdamW(parameters, train.lrFactors(lora.parameterNames(TrainingModel.ADAPTER_NAME)),
                train.adamBeta1(), train.adamBeta2(), train.adamEps(), train.weightDecay(), train.eightBitMoments());
        LossScaler scaler = model.model().computeType() == DataType.FLOAT16 ? LossScaler.dynamic() : LossScaler.off();
        LearningRateSchedule schedule = train.scheduleOf(stage.steps());
        if (step > stage.start()) {
            resumed.restore(parameters, optimizer, scaler);
        }
        if (resumed != null && step == resumed.step()) {
            numTokens = resumed.numTokens();
        }
        // Built after the restore: the EMA starts from the weights as they are, then takes the checkpoint's average.
        // Closed with the stage: the averages' device memory is the stage's.
        try (TrainingAverages averages = new TrainingAverages(recipe.averaging(), stage.steps(),
                lora.parameterNames(TrainingModel.ADAPTER_NAME), parameters)) {
            if (step > stage.start()) {
                averages.restore(step - stage.start(), resumed.averages(), resumed::readAverage);
            } else {
                averages.unreached().forEach(listener::onNote);
            }
            double auxCoefficient = train.routerAuxCoefficient(model.model().config());
            StepContext context = new StepContext(model.model(), parameters, model.manager(), optimizer, scaler,
                    train.maxGradNorm(), auxCoefficient, train.gradientCheckpointing(), 0);
            int accumulation = train.gradientAccumulation();
            EpochSteps epochSteps = new EpochSteps(objective.microBatchesPerEpoch(), accumulation);
            StageRecord record = new StageRecord(stage);
            LogWindow window = new LogWindow();
            BestModel best = BestModel.of(train);
            if (best != null) {
                if (!objective.hasValidation()) {
                    throw new Refusal("train.metric_for_best_model, load_best_model_at_end and early_stopping_patience "
                            + "compare evaluations, and this run evaluates nothing (no validation data): set "
                            + "data.validation_ratio or data.validation_files, or drop them");
                }
                if (step > stage.start()) {
                    best.restore(resumed.bestModel());
                } else {
                    refuseAnAverageHeldTooLate(train, stage);
                }
            }
            if (stage.evaluateFirst() && step == stage.start()) {
                if (objective.hasValidation()) {
                    evaluate(objective, stage, step, averages, record, null);
                }
                generateSamples(stage, step);
            }
            try (LoraModel.Scope training = lora.training()) {
                while (step < stage.end() && (best == null || !best.shouldTrainingStop())) {
                    long start = System.nanoTime();
                    long stageStep = step - stage.start();
                    long first = epochSteps.firstMicroBatch(stageStep);
                    long last = epochSteps.endMicroBatch(stageStep);
                    List<B> batches = new ArrayList<>();
                    for (long index = first; index < last; index++) {
                        batches.add(objective.microBatch(index));
                    }
                    long skipped = scaler.skippedSteps();
                    double lr = averages.learningRate(stageStep, s -> schedule.at(s - skipped));
                    OptimizerStep.Result<M> result = OptimizerStep.run(objective, batches,
                            context.withDropoutSeed(train.shuffleSeed() * 1_000_003L + stage.start() * accumulation + first),
                            lr);
                    if (result.skipped()) {
                        listener.onNote(String.format(Locale.ROOT, "step %d: float16 gradients overflowed at loss scale "
                                + "%.0f: update skipped, scale now %.0f", step + 1, result.lossScale(), scaler.scale()));
                    }
                    if (!result.isFinite() && scaler.gaveUp()) {
                        throw NonFiniteStep.error(step + 1, result.loss(), result.gradNorm(), lora,
                                TrainingModel.ADAPTER_NAME, checkpoints);
                    }
                    step++;
                    averages.afterStep(step - stage.start(), parameters);
                    double seconds = (System.nanoTime() - start) / 1e9;
                    boolean end = step == stage.end();
                    Map<String, Object> metrics = stepMetrics(stage, step, result, lr, auxCoefficient > 0, scaler,
                            seconds, (double) last / objective.microBatchesPerEpoch(), record);
                    boolean logged = step % train.logEvery() == 0 || end;
                    window.add(result.measured(), batches.size());
                    if (logged) {
                        window.putMeans(metrics);
                    }
                    listener.onStep(new TrainingListener.StepEnded(step, totalSteps, metrics, logged,
                            result.measured().figures()));
                    boolean evaluation = end || train.evalEvery() > 0 && step % train.evalEvery() == 0;
                    if (objective.hasValidation() && evaluation) {
                        evaluate(objective, stage, step, averages, record, best);
                    }
                    if (evaluation) {
                        generateSamples(stage, step);
                    }
                    // EarlyStoppingCallback sets should_training_stop: the stage ends after this step, as at its last
                    boolean stoppedEarly = best != null && best.shouldTrainingStop();
                    if (stoppedEarly) {
                        listener.onNote(best.stopLine(step));
                    }
                    boolean stageEnds = end || stoppedEarly;
                    if (end && best == null) {
                        record.adapters = writeAdapters(stage.adapterDir(), averages);
                    }
                    boolean stop = cancelled.getAsBoolean();
                    boolean onCadence = end || train.saveEvery() > 0 && step % train.saveEvery() == 0;
                    // no checkpoint of its own where early stopping ends the stage off the cadence (transformers
                    // writes none): a resume from the last one replays the steps to the same stop
                    if (onCadence || stop) {
                        if (best != null) {
                            best.saving(step, onCadence);
                        }
                        saveCheckpoint(objective, checkpoints, step, optimizer, scaler, averages, best);
                    }
                    if (stageEnds && best != null) {
                        record.adapters = endOfStage(best, stage, step, checkpoints, averages);
                    }
                    if (stop) {
                        listener.onNote("step " + step + ": cancelled; --resume continues from the checkpoint just saved");
                        return new Outcome(step, true, record.result(step, stageEnds ? stage.adapterDir() : null));
                    }
                }
            }
            if (record.adapters == null) { // resumed at the stage's very end: its adapters again, from that checkpoint
                record.adapters = best == null ? writeAdapters(stage.adapterDir(), averages)
                        : endOfStage(best, stage, step, checkpoints, averages);
            }
            return new Outcome(step, false, record.result(step, stage.adapterDir()));
        }
    }

    /** How a stage goes, as its steps and evaluations come. */
    private static final class StageRecord {
        private final Stage stage;
        private Double firstLoss;
        private double lastLoss = Double.NaN;
        private Map<String, Object> lastMetrics = Map.of();
        private Map<String, Object> firstEvaluation;
        private Map<String, Object> lastEvaluation;
        private Map<String, Path> adapters;

        StageRecord(Stage stage) {
            this.stage = stage;
        }

        TrainingResult.StageResult result(long step, Path adapterDir) {
            Map<String, Path> averaged = new LinkedHashMap<>(adapters == null ? Map.of() : adapters);
            averaged.remove("");
            return new TrainingResult.StageResult(stage.stage(), step, firstLoss == null ? Double.NaN : firstLoss,
                    lastLoss, lastMetrics, firstEvaluation, lastEvaluation, adapterDir, averaged);
        }
    }

    /**
     * The steps since the last logged one (train.log_every): a logged record holds their mean loss, as transformers
     * logs the loss since the last log, and the mean of the objective's other fractional metrics over all their
     * micro-batches, as TRL averages the per-micro-batch values it appended since the last log (each step's own value
     * is already the mean over its micro-batches, so it counts once per micro-batch: an epoch's short last step
     * weighs less); lr, grad_norm and the counts stay the logged step's own. Not {@link MicroBatchMeans}, which weighs
     * the loss by pairs. A resumed run's window starts at the resume, as transformers' does.
     */
    private static final class LogWindow {
        private final Map<String, Double> sums = new LinkedHashMap<>();
        private double lossSum;
        private int steps;
        private int microBatches;

        /** Adds a step of {@code microBatchCount} micro-batches: its loss and the objective's fractional metrics. */
        void add(Objective.Measured measured, int microBatchCount) {
            steps++;
            microBatches += microBatchCount;
            lossSum += measured.loss();
            measured.metrics().forEach((name, value) -> {
                if (value instanceof Double number) {
                    sums.merge(name, number * microBatchCount, Double::sum);
                }
            });
        }

        /** Puts the window's means into the logged step's record, and starts anew. */
        void putMeans(Map<String, Object> record) {
            if (steps > 1) { // one step is its own mean: its record stays as it is, bit for bit
                record.replace("loss", lossSum / steps);
                sums.forEach((name, sum) -> record.replace(name, sum / microBatches));
            }
            sums.clear();
            lossSum = 0;
            steps = 0;
            microBatches = 0;
        }
    }

    /** The step's record: step, stage, loss, the objective's metrics, then what every method logs. */
    private Map<String, Object> stepMetrics(Stage stage, long step, OptimizerStep.Result<?> result, double lr,
            boolean auxLoss, LossScaler scaler, double seconds, double epoch, StageRecord record) {
        Map<String, Object> metrics = new LinkedHashMap<>();
        metrics.put("step", step);
        if (stage.recordStage()) {
            metrics.put("stage", stage.stage());
        }
        metrics.put("loss", result.loss());
        Map<String, Object> objectiveMetrics = new LinkedHashMap<>(result.measured().metrics());
        Object aux = objectiveMetrics.remove("aux_loss");
        metrics.putAll(objectiveMetrics);
        if (auxLoss) {
            metrics.put("aux_loss", aux);
        }
        metrics.put("lr", lr);
        metrics.put("learning_rate", lr); // transformers' name, for tools that expect it
        metrics.put("grad_norm", result.gradNorm());
        if (scaler.enabled()) {
            metrics.put("loss_scale", result.lossScale());
            metrics.put("skipped", result.skipped());
        }
        long tokens = result.measured().tokens();
        metrics.put("tokens", tokens);
        if (numTokens.isPresent()) {
            numTokens = OptionalLong.of(numTokens.getAsLong() + tokens);
            metrics.put("num_tokens", numTokens.getAsLong());
        }
        metrics.put("tokens_per_second", tokens / seconds);
        metrics.put("epoch", epoch);
        metrics.put("memory_mb", TrainingOutputs.residentMegabytes());
        if (record.firstLoss == null) {
            record.firstLoss = result.loss();
        }
        record.lastLoss = result.loss();
        record.lastMetrics = metrics;
        return metrics;
    }

    /**
     * Evaluates the weights as they are and, after the first step, each weight average that holds something
     * (eval_loss_ema, ...), the adapters without dropout; tells the listener.
     */
    private <B, M extends Objective.Measured> void evaluate(Objective<B, M> objective, Stage stage, long step,
            TrainingAverages averages, StageRecord record, BestModel best) {
        Map<String, Object> metrics = new LinkedHashMap<>();
        metrics.put("step", step);
        if (stage.recordStage()) {
            metrics.put("stage", stage.stage());
        }
        String summary;
        try (LoraModel.Scope evaluating = model.lora().evaluating()) {
            Map<String, Number> values = objective.evaluate();
            metrics.putAll(values);
            // TRL's eval_num_tokens: the training tokens read so far, not the validation set's (compute_loss sets
            // num_tokens to its running count in eval mode too, and log() prefixes it)
            numTokens.ifPresent(tokens -> metrics.put("eval_num_tokens", tokens));
            summary = objective.describeEvaluation(values);
            if (step > stage.start()) {
                averages.current().forEach((name, weights) -> averages.withWeights(parameters, weights,
                        () -> metrics.put("eval_loss_" + name, objective.evaluate().get("eval_loss"))));
            }
        }
        // the names validate checks train.metric_for_best_model against (the tests of every method's evaluation run
        // with assertions on)
        assert EvaluationMetrics.lists(recipe.train(), recipe.averaging(), metrics.keySet()) : metrics.keySet();
        if (best != null && step > stage.start()) {
            best.evaluated(step, metrics);
        }
        if (record.firstEvaluation == null) {
            record.firstEvaluation = metrics;
        }
        record.lastEvaluation = metrics;
        listener.onEvaluation(new TrainingListener.Evaluated(step, metrics, "step " + step + ": " + summary));
    }

    /** train.eval_prompts answered by the weights as they are, at an evaluation (with or without validation data). */
    private void generateSamples(Stage stage, long step) {
        if (samples != null) {
            listener.onSamples(new TrainingListener.SamplesGenerated(step, stage.recordStage() ? stage.stage() : null,
                    samples.generate(model)));
        }
    }

    /** The stage's adapter and, beside it, each weight average's (adapter-ema, ...); by name, "" the adapter's. */
    private Map<String, Path> writeAdapters(Path adapterDir, TrainingAverages averages) {
        Map<String, Path> written = new LinkedHashMap<>();
        written.put("", writeAdapter(adapterDir));
        averages.current().forEach((name, weights) -> averages.withWeights(parameters, weights,
                () -> written.put(name, writeAdapter(adapterDir.resolveSibling(adapterDir.getFileName() + "-"
                        + name)))));
        return written;
    }

    /**
     * A stage whose first evaluation comes before the averaged loss it compares exists: refused before its first step
     * (validate judges what it can without the run's length).
     */
    private void refuseAnAverageHeldTooLate(Recipe.Train train, Stage stage) {
        long next = train.evalEvery() > 0 ? (stage.start() / train.evalEvery() + 1) * train.evalEvery() : Long.MAX_VALUE;
        boolean atEvalEvery = next <= stage.end();
        String tooLate = EvaluationMetrics.heldTooLate(train, recipe.averaging(),
                (atEvalEvery ? next : stage.end()) - stage.start(), atEvalEvery ? "train.eval_every "
                + train.evalEvery() : "the stage's last step", OptionalLong.of(stage.steps()));
        if (tooLate != null) {
            throw new Refusal("train.metric_for_best_model: " + tooLate);
        }
    }

    /**
     * The stage's end with the best checkpoint kept: with load_best_model_at_end the adapter arrays become the best
     * checkpoint's (its exact fp32 state, as transformers' _load_best_model loads its adapter) before the stage's
     * adapters are written, so they equal its adapter/ byte for byte; the weight averages stay the stage's last
     * (transformers has none). keep_last 1 then leaves the best checkpoint alone (transformers' special case for
     * save_total_limit 1). Metrics and the progress output say where the adapter came from.
     */
    private Map<String, Path> endOfStage(BestModel best, Stage stage, long step, Path checkpoints,
            TrainingAverages averages) {
        Path bestDir = best.bestCheckpoint(checkpoints);
        Map<String, Object> metrics = new LinkedHashMap<>();
        metrics.put("step", step);
        if (stage.recordStage()) {
            metrics.put("stage", stage.stage());
        }
        metrics.put("best_metric", best.state().bestMetric());
        metrics.put("best_global_step", best.state().bestGlobalStep());
        metrics.put("best_model_checkpoint", bestDir == null ? null : outputDir.relativize(bestDir).toString());
        metrics.put("should_training_stop", best.shouldTrainingStop());
        String line;
        if (best.loadsBest() && bestDir != null) {
            TrainingCheckpoint.load(bestDir, TrainingCheckpoint.shapesOf(parameters)).restoreParameters(parameters);
            metrics.put("adapter_from_step", best.state().bestCheckpointStep());
            line = String.format(Locale.ROOT, "step %d: load_best_model_at_end: %s is the best checkpoint's, %s "
                    + "(%s %.6g)", step, stage.adapterDir(), bestDir, best.metric(), best.state().bestMetric());
        } else {
            metrics.put("adapter_from_step", step);
            line = best.loadsBest() ? "step " + step + ": load_best_model_at_end: no checkpoint was evaluated "
                    + "best, the adapter is the last step's" : null;
        }
        Map<String, Path> written = writeAdapters(stage.adapterDir(), averages);
        BestModel.keepOnlyBest(checkpoints, recipe.train().keepLast(), bestDir);
        if (line != null) {
            listener.onNote(line);
        }
        listener.onStageKept(new TrainingListener.StageKept(step, metrics));
        return written;
    }

    private Path writeAdapter(Path dir) {
        return TrainingOutputs.writeAdapter(model.lora(), TrainingModel.ADAPTER_NAME, dir, model.baseModelDir(),
                recipe);
    }

    private <B, M extends Objective.Measured> void saveCheckpoint(Objective<B, M> objective, Path checkpoints,
            long step, AdamW optimizer, LossScaler scaler, TrainingAverages averages, BestModel best) {
        TrainingCheckpoint.Snapshot state = TrainingCheckpoint.Snapshot.of(step, parameters, optimizer, scaler,
                averages.arrays(), numTokens, best == null ? null : best.state());
        Path saved = TrainingCheckpoint.save(checkpoints, state, model.lora(), TrainingModel.ADAPTER_NAME,
                model.baseModelDir(), recipe.train().keepLast(), dir -> {
                    tokenizerFiles().writeInto(dir.resolve(TrainingCheckpoint.ADAPTER_DIR));
                    if (optimizer.eightBitMoments() != null) {
                        optimizer.eightBitMoments().save(dir.resolve(AdamW8bit.STATE_FILE));
                    }
                    averages.current().forEach((name, weights) -> averages.withWeights(parameters, weights,
                            () -> writeAdapterInto(dir.resolve("adapter-" + name))));
                    objective.saveState(dir);
                });
        listener.onCheckpoint(new TrainingListener.CheckpointSaved(step, saved));
    }

    /** A checkpoint's copy of an average, written straight into the checkpoint being staged. */
    private void writeAdapterInto(Path dir) {
        PeftAdapter.save(model.lora(), TrainingModel.ADAPTER_NAME, dir,
                model.baseModelDir().toAbsolutePath().toString());
        tokenizerFiles().writeInto(dir);
    }

    private SavedTokenizer.Contents tokenizerFiles() {
        if (tokenizerFiles == null) {
            tokenizerFiles = SavedTokenizer.of(recipe);
        }
        return tokenizerFiles;
    }
}
