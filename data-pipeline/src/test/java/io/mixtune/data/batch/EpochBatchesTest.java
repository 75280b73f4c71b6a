package io.mixtune.data.batch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.data.template.TokenizedSample;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class EpochBatchesTest {

    static List<TokenizedSample> samples(int count) {
        SplittableRandom random = new SplittableRandom(9);
        List<TokenizedSample> samples = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            samples.add(SamplePackerTest.sample(i, 3 + random.nextInt(200)));
        }
        return samples;
    }

    static List<Long> firstIds(List<PaddedBatch> batches) {
        List<Long> ids = new ArrayList<>();
        batches.forEach(b -> Arrays.stream(b.inputIds()).forEach(row -> ids.add(row[0])));
        return ids;
    }

    @Test
    void lengthGroupedBatchesHoldEverySampleOnceInASeededOrderWithLittlePadding() {
        List<TokenizedSample> samples = samples(1000);
        List<PaddedBatch> epoch0 = EpochBatches.lengthGrouped(samples, 8, 0, 42, 0);
        assertEquals(firstIds(epoch0), firstIds(EpochBatches.lengthGrouped(samples, 8, 0, 42, 0)), "same seed and epoch");
        assertNotEquals(firstIds(epoch0), firstIds(EpochBatches.lengthGrouped(samples, 8, 0, 42, 1)), "another epoch");
        assertNotEquals(firstIds(epoch0), firstIds(EpochBatches.lengthGrouped(samples, 8, 0, 7, 0)), "another seed");
        Set<Long> seen = new HashSet<>(firstIds(epoch0));
        assertEquals(1000, seen.size());
        long real = 0;
        long padded = 0;
        for (PaddedBatch batch : epoch0) {
            for (int r = 0; r < batch.inputIds().length; r++) {
                for (int t = 0; t < batch.inputIds()[r].length; t++) {
                    padded++;
                    if (batch.attentionMask()[r][t] == 1) {
                        real++;
                        assertEquals(t, batch.positionIds()[r][t]);
                    } else {
                        assertEquals(TokenizedSample.IGNORE, batch.labels()[r][t], "padding is never a target");
                    }
                }
            }
        }
        assertTrue((double) real / padded > 0.9, "length grouping keeps padding low: " + (double) real / padded);
    }

    @Test
    void packedBatchesAreSeededToo() {
        List<TokenizedSample> samples = samples(300);
        List<List<PackedRow>> a = EpochBatches.packed(samples, 256, 4, 0, 1, 0);
        List<List<PackedRow>> b = EpochBatches.packed(samples, 256, 4, 0, 1, 0);
        assertEquals(a.size(), b.size());
        for (int i = 0; i < a.size(); i++) {
            for (int r = 0; r < a.get(i).size(); r++) {
                assertTrue(Arrays.equals(a.get(i).get(r).inputIds(), b.get(i).get(r).inputIds()));
            }
        }
    }
}
