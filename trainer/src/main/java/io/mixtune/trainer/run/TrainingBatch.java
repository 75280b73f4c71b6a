package io.mixtune.trainer.run;

import io.mixtune.data.batch.PackedRow;
import io.mixtune.data.batch.PackingStrategy;
import io.mixtune.data.batch.PaddedBatch;
import io.mixtune.data.template.TokenizedSample;
import java.util.Arrays;
import java.util.List;

/**
 * One micro-batch as the model takes it. Labels are not shifted: the logits at position t are scored against
 * labels[t + 1], as transformers does internally.
 *
 * @param sampleIds per token, which packed sample it belongs to (-1 for padding), or null when rows are not packed
 * @param paddingMask 1 for real tokens, 0 for padding, or null when nothing is padded
 */
public record TrainingBatch(long[][] inputIds, long[][] labels, long[][] positionIds, long[][] sampleIds,
        long[][] paddingMask) {

    /**
     * Packed rows, cut after the last real token of the longest: the padding at the end of every row would only be
     * computed and masked out (no real token attends to it, and it has no target), so a row of 480 real tokens out of
     * 512 costs 480.
     */
    public static TrainingBatch packed(List<PackedRow> rows) {
        int b = rows.size();
        int length = rows.stream().mapToInt(PackedRow::realTokens).max().orElse(0);
        long[][] ids = new long[b][];
        long[][] labels = new long[b][];
        long[][] positions = new long[b][];
        long[][] samples = new long[b][];
        for (int r = 0; r < b; r++) {
            ids[r] = Arrays.copyOf(rows.get(r).inputIds(), length);
            labels[r] = Arrays.copyOf(rows.get(r).labels(), length);
            positions[r] = Arrays.copyOf(rows.get(r).positionIds(), length);
            samples[r] = Arrays.copyOf(rows.get(r).sampleIds(), length);
        }
        return new TrainingBatch(ids, labels, positions, samples, null);
    }

    /**
     * Rows packed by {@code strategy}. A wrapped row is one sequence, which TRL collates without padding-free (an
     * attention mask of ones, padding to the longest row): so it is a padded batch here too, and NEFTune's L its
     * padded length, as in transformers' hook.
     */
    public static TrainingBatch packed(List<PackedRow> rows, PackingStrategy strategy) {
        TrainingBatch packed = packed(rows);
        if (strategy != PackingStrategy.WRAPPED) {
            return packed;
        }
        long[][] mask = new long[packed.rows()][packed.length()];
        for (int r = 0; r < mask.length; r++) {
            for (int t = 0; t < mask[r].length; t++) {
                mask[r][t] = packed.sampleIds[r][t] >= 0 ? 1 : 0;
            }
        }
        return new TrainingBatch(packed.inputIds, packed.labels, packed.positionIds, null, mask);
    }

    public static TrainingBatch padded(PaddedBatch batch) {
        return new TrainingBatch(batch.inputIds(), batch.labels(), batch.positionIds(), null, batch.attentionMask());
    }

    public int rows() {
        return inputIds.length;
    }

    public int length() {
        return inputIds[0].length;
    }

    /** Tokens whose next token is a target: the positions whose logits are computed and scored. */
    public int targetCount() {
        int count = 0;
        for (long[] row : labels) {
            for (int t = 1; t < row.length; t++) {
                count += row[t] != TokenizedSample.IGNORE ? 1 : 0;
            }
        }
        return count;
    }

    /** Tokens that are not padding. */
    public int realTokens() {
        int count = 0;
        for (int r = 0; r < rows(); r++) {
            for (int t = 0; t < length(); t++) {
                count += isReal(r, t) ? 1 : 0;
            }
        }
        return count;
    }

    boolean isReal(int row, int t) {
        if (sampleIds != null) {
            return sampleIds[row][t] >= 0;
        }
        return paddingMask == null || paddingMask[row][t] != 0;
    }
}
