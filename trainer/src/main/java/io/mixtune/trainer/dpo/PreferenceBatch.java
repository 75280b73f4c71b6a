package io.mixtune.trainer.dpo;

import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.trainer.run.TrainingBatch;
import java.util.Arrays;
import java.util.List;

/**
 * A micro-batch of preference pairs as one forward pass takes it, laid out as TRL's DataCollatorForPreference does:
 * rows 0..P-1 are prompt + chosen, rows P..2P-1 prompt + rejected, all right-padded with padId to the longest row.
 * The labels are the completion tokens (everything else ignored), so the target log-probs summed per row are the
 * sequence log-probs DPO compares.
 *
 * @param completionLengths tokens of each row's completion (chosen rows first), IPO's length normalisation
 * @param indices the pairs' indices in their stage, the key of precomputed reference log-probs
 */
public record PreferenceBatch(TrainingBatch rows, int pairs, int[] completionLengths, int[] indices) {

    public static PreferenceBatch of(List<PreferenceSample> samples, int[] indices, long padId) {
        return of(samples, indices, padId, false);
    }

    /**
     * @param labelPrompts label every token of a row, the prompt's too (ORPO's NLL reads them); the completion is then
     *     each row's last completionLengths[row] targets
     */
    public static PreferenceBatch of(List<PreferenceSample> samples, int[] indices, long padId,
            boolean labelPrompts) {
        int pairs = samples.size();
        long[][] sequences = new long[2 * pairs][];
        int[] promptLengths = new int[2 * pairs];
        int[] completionLengths = new int[2 * pairs];
        for (int i = 0; i < pairs; i++) {
            PreferenceSample sample = samples.get(i);
            for (int side = 0; side < 2; side++) {
                long[] completion = side == 0 ? sample.chosenIds() : sample.rejectedIds();
                int row = side * pairs + i;
                sequences[row] = concat(sample.promptIds(), completion);
                promptLengths[row] = labelPrompts ? 0 : sample.promptIds().length;
                completionLengths[row] = completion.length;
            }
        }
        return new PreferenceBatch(completionRows(sequences, promptLengths, padId), pairs, completionLengths,
                indices);
    }

    /**
     * Rows of prompt + completion as TRL's preference collators lay them out: right-padded with padId to the longest,
     * the labels the completion tokens (everything else ignored), so that target log-probs summed per row are the
     * completions' log-probs.
     */
    public static TrainingBatch completionRows(long[][] sequences, int[] promptLengths, long padId) {
        int rowCount = sequences.length;
        int length = Arrays.stream(sequences).mapToInt(s -> s.length).max().orElse(0);
        long[][] ids = new long[rowCount][length];
        long[][] labels = new long[rowCount][length];
        long[][] positions = new long[rowCount][length];
        long[][] mask = new long[rowCount][length];
        for (int row = 0; row < rowCount; row++) {
            Arrays.fill(ids[row], padId);
            Arrays.fill(labels[row], TokenizedSample.IGNORE);
            for (int t = 0; t < length; t++) {
                positions[row][t] = t;
            }
            long[] sequence = sequences[row];
            for (int t = 0; t < sequence.length; t++) {
                ids[row][t] = sequence[t];
                mask[row][t] = 1;
                if (t >= promptLengths[row]) {
                    labels[row][t] = sequence[t];
                }
            }
        }
        return new TrainingBatch(ids, labels, positions, null, mask);
    }

    /** Scored tokens of each row: its completion, less the first token when the prompt is empty (nothing predicts it). */
    int[] targetsPerRow() {
        return targetsPerRow(rows);
    }

    /** Scored tokens of each row of a batch (its labels that are not ignored, past the first position). */
    public static int[] targetsPerRow(TrainingBatch rows) {
        int[] counts = new int[rows.labels().length];
        for (int row = 0; row < counts.length; row++) {
            long[] labels = rows.labels()[row];
            for (int t = 1; t < labels.length; t++) {
                counts[row] += labels[t] != TokenizedSample.IGNORE ? 1 : 0;
            }
        }
        return counts;
    }

    /** Tokens that are not padding. */
    public int realTokens() {
        return rows.realTokens();
    }

    private static long[] concat(long[] a, long[] b) {
        long[] out = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}
