package io.mixtune.data.batch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.data.template.TokenizedSample;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class SamplePackerTest {

    /** A sample whose ids encode (sample, position) so any misplacement shows; labels on its second half. */
    static TokenizedSample sample(int index, int length) {
        long[] ids = new long[length];
        long[] labels = new long[length];
        for (int t = 0; t < length; t++) {
            ids[t] = index * 1000L + t;
            labels[t] = t >= length / 2 ? ids[t] : TokenizedSample.IGNORE;
        }
        return new TokenizedSample(ids, labels, "s" + index);
    }

    @Test
    void firstFitDecreasingKeepsEverySampleWholeAndEveryTargetOnce() {
        SplittableRandom random = new SplittableRandom(3);
        List<TokenizedSample> samples = new ArrayList<>();
        for (int i = 0; i < 300; i++) {
            samples.add(sample(i, 2 + random.nextInt(120)));
        }
        SamplePacker packer = new SamplePacker(128, 0);
        List<PackedRow> rows = new ArrayList<>();
        Map<Long, Integer> targetsSeen = new HashMap<>();
        int[] placed = new int[samples.size()];
        for (int[] assignment : packer.assign(samples)) {
            List<TokenizedSample> inRow = new ArrayList<>();
            for (int index : assignment) {
                inRow.add(samples.get(index));
                placed[index]++;
            }
            PackedRow row = packer.row(inRow);
            rows.add(row);
            for (int t = 0; t < 128; t++) {
                if (row.sampleIds()[t] < 0) {
                    assertEquals(0, row.inputIds()[t], "padding");
                    assertEquals(TokenizedSample.IGNORE, row.labels()[t]);
                    continue;
                }
                TokenizedSample source = inRow.get((int) row.sampleIds()[t]);
                long position = row.positionIds()[t];
                assertEquals(source.inputIds()[(int) position], row.inputIds()[t], "positions restart per sample");
                if (row.labels()[t] != TokenizedSample.IGNORE) {
                    targetsSeen.merge(row.labels()[t], 1, Integer::sum);
                }
                if (position == 0) {
                    assertEquals(TokenizedSample.IGNORE, row.labels()[t], "a sample's first token is never a target");
                }
            }
        }
        for (int i = 0; i < samples.size(); i++) {
            assertEquals(1, placed[i], "sample " + i + " placed once");
            for (long label : samples.get(i).labels()) {
                if (label != TokenizedSample.IGNORE) {
                    assertEquals(1, targetsSeen.get(label), "target " + label + " appears exactly once");
                }
            }
        }
        double efficiency = SamplePacker.efficiency(rows);
        int total = samples.stream().mapToInt(TokenizedSample::length).sum();
        assertTrue(rows.size() <= Math.ceil(total / 128.0) * 1.1 + 1, rows.size() + " rows for " + total + " tokens");
        assertTrue(efficiency > 0.9, "packing efficiency " + efficiency);
    }

    @Test
    void thePackedRowsSampleIdsKeepAttentionInsideEachSample() {
        SamplePacker packer = new SamplePacker(16, 0);
        PackedRow row = packer.row(List.of(sample(0, 5), sample(1, 7), sample(2, 2)));
        try (ai.djl.ndarray.NDManager manager = ai.djl.ndarray.NDManager.newBaseManager()) {
            float[] mask = io.mixtune.model.mistral.AttentionMask.forRows(manager, 1, 16, null,
                    manager.create(row.sampleIds()).reshape(1, 16), null, ai.djl.ndarray.types.DataType.FLOAT32)
                    .toFloatArray();
            for (int q = 0; q < 16; q++) {
                for (int k = 0; k < 16; k++) {
                    boolean open = mask[q * 16 + k] == 0f;
                    boolean sameSample = row.sampleIds()[q] == row.sampleIds()[k];
                    assertEquals(sameSample && k <= q, open, "query " + q + ", key " + k);
                }
            }
        }
    }
}
