package io.mixtune.trainer.sft;

import io.mixtune.data.batch.PackedRow;
import io.mixtune.data.batch.PaddedBatch;
import io.mixtune.data.template.TokenizedSample;
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

    public static TrainingBatch packed(List<PackedRow> rows) {
        int b = rows.size();
        long[][] ids = new long[b][];
        long[][] labels = new long[b][];
        long[][] positions = new long[b][];
        long[][] samples = new long[b][];
        for (int r = 0; r < b; r++) {
            ids[r] = rows.get(r).inputIds();
            labels[r] = rows.get(r).labels();
            positions[r] = rows.get(r).positionIds();
            samples[r] = rows.get(r).sampleIds();
        }
        return new TrainingBatch(ids, labels, positions, samples, null);
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
