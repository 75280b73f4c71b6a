package io.mixtune.trainer.run;

import static org.junit.jupiter.api.Assertions.assertEquals;

import ai.djl.ndarray.NDManager;
import io.mixtune.data.batch.PackedRow;
import io.mixtune.data.batch.SamplePacker;
import io.mixtune.data.template.TokenizedSample;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Packed rows are cut after the longest row's last real token: the loss, the load-balancing loss and the gradients
 * equal those of the full-length rows (their trailing padding is masked out and has no target), so the cut only saves
 * the work.
 */
class TrainingBatchTest {
    private static final int ROW_LENGTH = 40;

    @ParameterizedTest
    @ValueSource(strings = {"mixtral", "mistral"})
    void cuttingTrailingPaddingChangesNothing(String name) throws Exception {
        // First-fit decreasing puts the samples of 20 and 14 tokens in one row (34 of 40) and the 11 in another.
        List<PackedRow> rows = new SamplePacker(ROW_LENGTH, 2).pack(List.of(sample(20, 5), sample(11, 9),
                sample(14, 13)));
        assertEquals(2, rows.size());
        TrainingBatch cut = TrainingBatch.packed(rows);
        assertEquals(34, cut.length(), "cut after the longest row's real tokens");
        TrainingBatch full = new TrainingBatch(
                rows.stream().map(PackedRow::inputIds).toArray(long[][]::new),
                rows.stream().map(PackedRow::labels).toArray(long[][]::new),
                rows.stream().map(PackedRow::positionIds).toArray(long[][]::new),
                rows.stream().map(PackedRow::sampleIds).toArray(long[][]::new), null);
        assertEquals(ROW_LENGTH, full.length());
        assertEquals(full.targetCount(), cut.targetCount());
        assertEquals(full.realTokens(), cut.realTokens());

        try (NDManager manager = NDManager.newBaseManager()) {
            // Dropout off: its masks are drawn per row length, which the cut changes.
            CheckpointedBackwardTest.Trainable trainable = CheckpointedBackwardTest.Trainable.load(name, 0.0, manager);
            double worst = CheckpointedBackwardTest.assertSameBackward(trainable, full, false, cut, false, manager);
            System.out.printf("%s: cut vs full-length packed rows, worst gradient diff %.2e of the array's max%n", name,
                    worst);
        }
    }

    /** A sample of {@code length} tokens, ids from {@code seed}, the second half trained. */
    private static TokenizedSample sample(int length, int seed) {
        long[] ids = new long[length];
        long[] labels = new long[length];
        for (int t = 0; t < length; t++) {
            ids[t] = 3 + (seed * 31L + t * 7L) % 500;
            labels[t] = t >= length / 2 ? ids[t] : TokenizedSample.IGNORE;
        }
        return new TokenizedSample(ids, labels, "sample " + seed);
    }
}
