package io.mixtune.trainer.sft;

import io.mixtune.data.batch.EpochBatches;
import io.mixtune.data.batch.PackedRow;
import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.EmbeddingNoise;
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
 * Supervised fine-tuning as an objective: the causal-LM cross-entropy on the target (assistant) tokens, summed over a
 * step's micro-batches and divided by the step's target count (HF's Trainer with num_items_in_batch), plus the router
 * coefficient x the load-balancing loss averaged over micro-batches. Micro-batches come from one endless, seeded
 * stream of packed (or length-grouped) batches, epoch after epoch.
 */
public final class SftObjective implements Objective<TrainingBatch, SftObjective.Measured> {
    private final Recipe recipe;
    private final CausalLm model;
    private final TrainingModel trained;
    private final ChatDataset dataset;
    private final long padId;
    private final EpochCache<TrainingBatch> epochs = new EpochCache<>(this::build);
    private final long microBatchesPerEpoch;
    private final EmbeddingNoise noise;
    private List<TrainingBatch> validationBatches; // built at the first evaluation

    SftObjective(Recipe recipe, TrainingModel trained, ChatDataset dataset) {
        this.recipe = recipe;
        this.trained = trained;
        this.model = trained.model();
        this.dataset = dataset;
        this.padId = model.config().eosTokenId();
        this.microBatchesPerEpoch = epoch(0).size();
        this.noise = EmbeddingNoise.of(recipe.train().neftuneNoiseAlpha());
    }

    /**
     * What one SFT step measured, at the weights before its update.
     *
     * @param loss the step objective: summed cross-entropy / targets + coefficient x loadBalancing
     * @param crossEntropy summed cross-entropy / targets (the mean over the step's target tokens)
     * @param loadBalancing the router load-balancing loss averaged over micro-batches, before the coefficient (0 for a
     *     dense model); reported even when the coefficient is 0
     * @param entropy the mean entropy of the target positions' distributions over the vocabulary (nats), per
     *     micro-batch, averaged over the micro-batches as TRL's SFTTrainer averages its per-batch values (entropy)
     * @param meanTokenAccuracy the share of target tokens that are their logits' argmax, averaged likewise
     *     (mean_token_accuracy)
     */
    public record Measured(double loss, double crossEntropy, double loadBalancing, int targets, long tokens,
            double entropy, double meanTokenAccuracy) implements Objective.Measured {
        @Override
        public Map<String, Object> metrics() {
            Map<String, Object> metrics = new LinkedHashMap<>();
            metrics.put("aux_loss", loadBalancing);
            metrics.put("target_tokens", targets);
            metrics.put("entropy", entropy);
            metrics.put("mean_token_accuracy", meanTokenAccuracy);
            return metrics;
        }
    }

    /**
     * Per micro-batch, backward of its summed cross-entropy / the step's target count plus coefficient x its
     * load-balancing loss / micro-batches, all times the loss scale (HF's Trainer with num_items_in_batch).
     */
    public static Measured gradients(List<TrainingBatch> batches, StepContext context) {
        return gradients(batches, context, EmbeddingNoise.OFF);
    }

    /** The same with NEFTune's {@code noise} on the embeddings, drawn per micro-batch like its dropout masks. */
    public static Measured gradients(List<TrainingBatch> batches, StepContext context, EmbeddingNoise noise) {
        int targets = 0;
        long tokens = 0;
        for (TrainingBatch batch : batches) {
            targets += batch.targetCount();
            tokens += batch.realTokens();
        }
        double scale = context.scaler().scale();
        double auxCoefficient = context.auxCoefficient();
        double crossEntropy = 0;
        double loadBalancing = 0;
        double entropy = 0;
        double accuracy = 0;
        for (int j = 0; j < batches.size(); j++) {
            // Dropout is seeded per micro-batch (and layer), so a resumed run draws the same masks.
            CausalLmLoss.Values values = CausalLmLoss.backward(context.model(), batches.get(j),
                    Math.max(1, targets) / scale, auxCoefficient / batches.size() * scale,
                    context.gradientCheckpointing(), context.dropoutSeed() + j, noise, context.manager());
            crossEntropy += values.crossEntropySum();
            // A micro-batch without targets counts as 0, as TRL appends 0.0 for it.
            if (values.targets() > 0) {
                entropy += values.entropySum() / values.targets() / batches.size();
                accuracy += (double) values.correctPredictions() / values.targets() / batches.size();
            }
            if (!Double.isNaN(values.loadBalancing())) {
                loadBalancing += values.loadBalancing() / batches.size();
            }
        }
        double meanCrossEntropy = crossEntropy / Math.max(1, targets);
        double loss = meanCrossEntropy + (auxCoefficient > 0 ? auxCoefficient * loadBalancing : 0);
        return new Measured(loss, meanCrossEntropy, loadBalancing, targets, tokens, entropy, accuracy);
    }

    @Override
    public Measured backward(List<TrainingBatch> microBatches, StepContext context) {
        return gradients(microBatches, context, noise);
    }

    @Override
    public long microBatchesPerEpoch() {
        return microBatchesPerEpoch;
    }

    @Override
    public TrainingBatch microBatch(long index) {
        return epoch((int) (index / microBatchesPerEpoch)).get((int) (index % microBatchesPerEpoch));
    }

    /** The micro-batches of one epoch, shuffled by the seed and the epoch number. */
    List<TrainingBatch> epoch(int epoch) {
        return epochs.epoch(epoch);
    }

    private List<TrainingBatch> build(int epoch) {
        Recipe.Train train = recipe.train();
        DataConfig data = recipe.data();
        List<TrainingBatch> batches = new ArrayList<>();
        if (data.packing()) {
            for (List<PackedRow> rows : EpochBatches.packed(dataset.train(), data.packer(), data.maxSeqLen(),
                    train.microBatchSize(), padId, train.shuffleSeed(), epoch)) {
                batches.add(TrainingBatch.packed(rows, data.packer()));
            }
        } else {
            EpochBatches.lengthGrouped(dataset.train(), train.microBatchSize(), padId, train.shuffleSeed(), epoch)
                    .forEach(b -> batches.add(TrainingBatch.padded(b)));
        }
        return batches;
    }

    @Override
    public boolean hasValidation() {
        return !dataset.validation().isEmpty();
    }

    /**
     * Mean cross-entropy per target token of the validation set ({@link Evaluation}, as `mixtune eval` computes it):
     * eval_target_tokens, eval_loss, eval_perplexity; and TRL's SFTTrainer's eval_entropy, eval_mean_token_accuracy
     * and, with the router loss on, eval_aux_loss (per validation batch, averaged over the batches).
     */
    @Override
    public Map<String, Number> evaluate() {
        if (validationBatches == null) {
            DataConfig data = recipe.data();
            validationBatches = Evaluation.batches(dataset.validation(), data.packing(), data.packer(),
                    data.maxSeqLen(), recipe.train().microBatchSize(), padId);
        }
        Evaluation.Result result = Evaluation.of(model, validationBatches, trained.manager());
        Map<String, Number> metrics = new LinkedHashMap<>();
        metrics.put("eval_target_tokens", result.targets());
        metrics.put("eval_loss", result.loss());
        metrics.put("eval_perplexity", result.perplexity());
        metrics.put("eval_entropy", result.entropy());
        metrics.put("eval_mean_token_accuracy", result.meanTokenAccuracy());
        if (recipe.train().routerAuxCoefficient(model.config()) > 0) {
            metrics.put("eval_aux_loss", result.loadBalancing());
        }
        return metrics;
    }

    @Override
    public String describeEvaluation(Map<String, Number> metrics) {
        return String.format(Locale.ROOT, "eval_loss %.4f  perplexity %.2f", metrics.get("eval_loss"),
                metrics.get("eval_perplexity"));
    }

    /** The share of packed rows' positions that hold real tokens, over the first epoch. */
    double packingEfficiency() {
        long real = 0;
        long total = 0;
        for (TrainingBatch batch : epoch(0)) {
            real += batch.realTokens();
            total += (long) batch.rows() * recipe.data().maxSeqLen(); // rows are cut after their last real token
        }
        return total == 0 ? 0 : (double) real / total;
    }
}
