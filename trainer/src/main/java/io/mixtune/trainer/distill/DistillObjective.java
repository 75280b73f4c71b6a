package io.mixtune.trainer.distill;

import io.mixtune.data.batch.EpochBatches;
import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.model.generate.GenerationConfig;
import io.mixtune.model.nn.WithoutGrad;
import io.mixtune.trainer.recipe.Distillation;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.EpochCache;
import io.mixtune.trainer.run.Evaluation;
import io.mixtune.trainer.run.Objective;
import io.mixtune.trainer.run.StepContext;
import io.mixtune.trainer.run.TrainingBatch;
import io.mixtune.trainer.run.TrainingModel;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Distillation as an objective: the SFT data's samples in shuffled, length-grouped micro-batches (never packed: TRL's
 * DistillationTrainer pads prompt and completion), a share lmbda of them with the student's own completions
 * ({@link OnPolicyCompletions}), and per step the generalized JSD summed over the step's completion tokens and divided
 * by their count, as TRL 1.13 reduces it (num_items_in_batch over the generation batch, which is the step's).
 */
final class DistillObjective implements Objective<TrainingBatch, DistillObjective.Measured> {
    private final Recipe recipe;
    private final Distillation distillation;
    private final TrainingModel trained;
    private final DistillTeacher teacher;
    private final ChatDataset dataset;
    private final OnPolicyCompletions onPolicy;
    private final long padId;
    private final EpochCache<TrainingBatch> epochs = new EpochCache<>(this::build);
    private final long microBatchesPerEpoch;
    private List<TrainingBatch> validationBatches; // built at the first evaluation

    DistillObjective(Recipe recipe, TrainingModel trained, DistillTeacher teacher, ChatDataset dataset) {
        this.recipe = recipe;
        this.distillation = recipe.distillation();
        this.trained = trained;
        this.teacher = teacher;
        this.dataset = dataset;
        this.padId = trained.model().config().eosTokenId();
        this.onPolicy = new OnPolicyCompletions(distillation, GenerationConfig.read(trained.baseModelDir(),
                trained.model().config()).eosTokenIds(), padId);
        this.microBatchesPerEpoch = epoch(0).size();
    }

    /**
     * What one distillation step measured, at the weights before its update.
     *
     * @param loss the step's divergence summed over its completion tokens / their count
     * @param completionTokens the tokens the loss is over
     * @param entropy the student's mean per-token entropy per micro-batch, averaged over the micro-batches (TRL's)
     * @param onPolicyShare the share of the step's micro-batches trained on the student's own completions
     * @param meanCompletionLength the generated completions' mean length (TRL's completions/mean_length), NaN when
     *     the step generated none
     */
    record Measured(double loss, int completionTokens, long tokens, double entropy, double onPolicyShare,
            double meanCompletionLength) implements Objective.Measured {
        @Override
        public Map<String, Object> metrics() {
            Map<String, Object> metrics = new LinkedHashMap<>();
            metrics.put("completion_tokens", completionTokens);
            metrics.put("entropy", entropy);
            metrics.put("on_policy", onPolicyShare);
            if (!Double.isNaN(meanCompletionLength)) {
                metrics.put("completions/mean_length", meanCompletionLength);
            }
            return metrics;
        }

        @Override
        public String figures() {
            return String.format(Locale.ROOT, "  entropy %.3f", entropy);
        }
    }

    @Override
    public Measured backward(List<TrainingBatch> microBatches, StepContext context) {
        // The step's final micro-batches first (the on-policy ones generated), as TRL generates the whole generation
        // batch before its first backward: the loss divides by the completion tokens of all of them.
        List<TrainingBatch> batches = new ArrayList<>();
        int generated = 0;
        long generatedTokens = 0;
        long generatedRows = 0;
        for (int j = 0; j < microBatches.size(); j++) {
            TrainingBatch batch = microBatches.get(j);
            long seed = context.dropoutSeed() + j;
            if (onPolicy.draws(seed)) {
                batch = onPolicy.generate(trained.lora(), context.model(), batch, seed);
                generated++;
                generatedTokens += batch.targetCount();
                generatedRows += batch.rows();
            }
            batches.add(batch);
        }
        int targets = 0;
        long tokens = 0;
        for (TrainingBatch batch : batches) {
            targets += batch.targetCount();
            tokens += batch.realTokens();
        }
        double scale = context.scaler().scale();
        double divergence = 0;
        double entropy = 0;
        for (int j = 0; j < batches.size(); j++) {
            DistillStep.Values values = DistillStep.backward(context.model(), teacher, batches.get(j),
                    distillation.beta(), distillation.temperature(), Math.max(1, targets) / scale,
                    context.gradientCheckpointing(), context.dropoutSeed() + j, context.manager());
            divergence += values.divergenceSum();
            if (values.tokens() > 0) {
                entropy += values.entropySum() / values.tokens() / batches.size();
            }
        }
        return new Measured(divergence / Math.max(1, targets), targets, tokens, entropy,
                (double) generated / batches.size(),
                generated == 0 ? Double.NaN : (double) generatedTokens / generatedRows);
    }

    @Override
    public long microBatchesPerEpoch() {
        return microBatchesPerEpoch;
    }

    @Override
    public TrainingBatch microBatch(long index) {
        return epoch((int) (index / microBatchesPerEpoch)).get((int) (index % microBatchesPerEpoch));
    }

    /** The micro-batches of one epoch, shuffled by the data seed and the epoch number. */
    private List<TrainingBatch> epoch(int epoch) {
        return epochs.epoch(epoch);
    }

    private List<TrainingBatch> build(int epoch) {
        List<TrainingBatch> batches = new ArrayList<>();
        EpochBatches.lengthGrouped(dataset.train(), recipe.train().microBatchSize(), padId,
                recipe.train().shuffleSeed(), epoch).forEach(b -> batches.add(TrainingBatch.padded(b)));
        return batches;
    }

    @Override
    public boolean hasValidation() {
        return !dataset.validation().isEmpty();
    }

    /**
     * The divergence over the validation samples' own completions (never generated, so that evaluations compare),
     * summed and divided by their tokens (eval_loss), and the student's entropy per batch averaged (eval_entropy).
     */
    @Override
    public Map<String, Number> evaluate() {
        if (validationBatches == null) {
            validationBatches = Evaluation.batches(dataset.validation(), false, recipe.data().maxSeqLen(),
                    recipe.train().microBatchSize(), padId);
        }
        double divergence = 0;
        double entropy = 0;
        long targets = 0;
        for (TrainingBatch batch : validationBatches) {
            DistillStep.Values values = WithoutGrad.get(() -> DistillStep.measure(trained.model(), teacher, batch,
                    distillation.beta(), distillation.temperature(), trained.manager()));
            divergence += values.divergenceSum();
            targets += values.tokens();
            if (values.tokens() > 0) {
                entropy += values.entropySum() / values.tokens() / validationBatches.size();
            }
        }
        Map<String, Number> metrics = new LinkedHashMap<>();
        metrics.put("eval_loss", divergence / Math.max(1, targets));
        metrics.put("eval_completion_tokens", targets);
        metrics.put("eval_entropy", entropy);
        return metrics;
    }

    @Override
    public String describeEvaluation(Map<String, Number> metrics) {
        return String.format(Locale.ROOT, "eval_loss %.4f  eval_entropy %.3f", metrics.get("eval_loss").doubleValue(),
                metrics.get("eval_entropy").doubleValue());
    }
}
