package io.mixtune.trainer.kto;

import io.mixtune.data.preference.LabeledSample;
import io.mixtune.trainer.dpo.PreferenceBatch;
import io.mixtune.trainer.run.TrainingBatch;
import java.util.List;

/**
 * A micro-batch of unpaired examples as TRL 1.13's DataCollatorForUnpairedPreference lays it out: row i is prompt i +
 * completion i, and, where the loss estimates the KL term, KL row i is prompt i + the mismatched completion
 * ({@link LabeledSample#klCompletions}); every row cut to its first max_seq_len tokens and right-padded with padId.
 * The labels are the completion tokens, so the target log-probs summed per row are the completions' log-probs.
 *
 * @param klRows null where the loss reads no KL estimate (apo_zero_unpaired)
 * @param labels per row, whether its completion is desirable
 * @param indices the examples' indices in their set, the key of the precomputed reference log-probs
 */
public record KtoBatch(TrainingBatch rows, TrainingBatch klRows, boolean[] labels, int[] indices) {

    /**
     * @param klCompletions per example of the whole set, its KL completion; null for no KL rows
     */
    public static KtoBatch of(List<LabeledSample> samples, long[][] klCompletions, int[] indices, int maxSeqLen,
            long padId) {
        int n = indices.length;
        long[][] rows = new long[n][];
        long[][] klRows = klCompletions == null ? null : new long[n][];
        int[] promptLengths = new int[n];
        boolean[] labels = new boolean[n];
        for (int i = 0; i < n; i++) {
            LabeledSample sample = samples.get(indices[i]);
            rows[i] = sample.row(sample.completionIds(), maxSeqLen);
            if (klRows != null) {
                klRows[i] = sample.row(klCompletions[indices[i]], maxSeqLen);
            }
            promptLengths[i] = sample.promptIds().length;
            labels[i] = sample.label();
        }
        return new KtoBatch(PreferenceBatch.completionRows(rows, promptLengths, padId),
                klRows == null ? null : PreferenceBatch.completionRows(klRows, promptLengths, padId), labels, indices);
    }

    public int size() {
        return labels.length;
    }

    /** Tokens that are not padding, of the rows trained on. */
    public int realTokens() {
        return rows.realTokens();
    }
}
