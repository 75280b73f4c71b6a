package io.mixtune.trainer.run;

import ai.djl.ndarray.NDManager;
import io.mixtune.data.batch.EpochBatches;
import io.mixtune.data.batch.PackedRow;
import io.mixtune.data.batch.PackingStrategy;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.model.mistral.CausalLm;
import java.util.ArrayList;
import java.util.List;

/**
 * The loss on the target (assistant) tokens of a data set: what training logs as eval_loss and `mixtune eval` prints,
 * computed in this one place so the two agree. Cross-entropy only, without Mixtral's load-balancing term (that one
 * and TRL's token statistics are reported beside it).
 */
public final class Evaluation {
    private Evaluation() {}

    /**
     * @param loss summed cross-entropy over the target tokens / their number
     * @param targets how many target tokens were scored
     * @param meanTokenAccuracy per batch the share of its targets that are their logits' argmax, averaged over the
     *     batches (TRL's SFTTrainer: eval_mean_token_accuracy, each eval batch's value counting the same)
     * @param entropy per batch the mean entropy of its target positions' distributions, averaged over the batches
     *     (eval_entropy, likewise)
     * @param loadBalancing the router load-balancing loss averaged over the batches (eval_aux_loss), NaN for a dense
     *     model
     */
    public record Result(double loss, long targets, double meanTokenAccuracy, double entropy, double loadBalancing) {
        /** The loss alone (proxy tuning's combined logits): the other figures NaN. */
        public Result(double loss, long targets) {
            this(loss, targets, Double.NaN, Double.NaN, Double.NaN);
        }

        public double perplexity() {
            return Math.exp(loss);
        }
    }

    /**
     * The samples' micro-batches in a fixed order (no shuffling): packed into rows of {@code maxSeqLen}, best-fit
     * decreasing, {@code microBatchSize} rows each; or, unpacked, length-grouped padded batches.
     */
    public static List<TrainingBatch> batches(List<TokenizedSample> samples, boolean packing, int maxSeqLen,
            int microBatchSize, long padId) {
        return batches(samples, packing, PackingStrategy.BFD, maxSeqLen, microBatchSize, padId);
    }

    /** As {@link #batches(List, boolean, int, int, long)}, packed by {@code strategy} (TRL's eval_packing default). */
    public static List<TrainingBatch> batches(List<TokenizedSample> samples, boolean packing, PackingStrategy strategy,
            int maxSeqLen, int microBatchSize, long padId) {
        List<TrainingBatch> batches = new ArrayList<>();
        if (packing) {
            List<PackedRow> rows = strategy.pack(samples, maxSeqLen, padId);
            for (int i = 0; i < rows.size(); i += microBatchSize) {
                batches.add(TrainingBatch.packed(rows.subList(i, Math.min(rows.size(), i + microBatchSize)),
                        strategy));
            }
        } else {
            EpochBatches.lengthGrouped(samples, microBatchSize, padId, 0, 0)
                    .forEach(b -> batches.add(TrainingBatch.padded(b)));
        }
        return batches;
    }

    /**
     * Mean cross-entropy per target token over the batches, the model as it is (the caller turns LoRA dropout off);
     * no gradient is recorded. Each batch's arrays are freed before the next.
     */
    public static Result of(CausalLm model, List<TrainingBatch> batches, NDManager manager) {
        double sum = 0;
        long targets = 0;
        double accuracy = 0;
        double entropy = 0;
        double loadBalancing = 0;
        for (TrainingBatch batch : batches) {
            try (NDManager batchManager = manager.newSubManager()) {
                CausalLmLoss.Terms terms = CausalLmLoss.of(model, batch, batchManager);
                sum += terms.crossEntropySum().getFloat();
                targets += terms.targets();
                // A batch without targets counts as 0, as TRL appends 0.0 for it.
                if (terms.targets() > 0) {
                    accuracy += (double) terms.correctPredictions() / terms.targets();
                    entropy += terms.entropySum() / terms.targets();
                }
                loadBalancing += terms.loadBalancing() == null ? Double.NaN : terms.loadBalancing().getFloat();
            }
        }
        int count = Math.max(1, batches.size());
        return new Result(sum / Math.max(1, targets), targets, accuracy / count, entropy / count,
                loadBalancing / count);
    }
}
