package io.mixtune.merging.gguf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * GgufWriter encodes a part in slices of {@link GgufWriter#SLICE_VALUES} values (a part's bytes can pass a
 * ByteBuffer's 2 GiB: an f32 part of 2^29 + 32 values threw "capacity < 0" when encoded whole): a part longer than a
 * slice, not a whole number of them, is stored as the same bytes as one encoding of it.
 */
class GgufWriterTest {

    @Test
    void aPartLongerThanASliceIsStoredAsOneEncodingOfIt(@TempDir Path dir) throws Exception {
        int n = GgufWriter.SLICE_VALUES * 2 + 256 + 96 * 256; // whole 256-value k-quant super-blocks
        float[] values = new float[n];
        Random random = new Random(0);
        for (int i = 0; i < n; i++) {
            values[i] = (float) random.nextGaussian() * 0.02f;
        }
        GgufWriter writer = new GgufWriter();
        for (GgmlType type : GgmlType.values()) {
            writer.addTensor(type.name(), new long[] {n / 256, 256}, type, sink -> sink.accept(values));
        }
        Path file = dir.resolve("sliced.gguf");
        writer.write(file);
        GgufReader reader = GgufReader.open(file);
        for (GgmlType type : GgmlType.values()) {
            ByteBuffer whole = ByteBuffer.allocate((int) type.bytes(n)).order(ByteOrder.LITTLE_ENDIAN);
            GgufQuants.encode(values, 0, n, type, whole);
            assertArrayEquals(whole.array(), reader.bytes(type.name()), type.name());
        }
    }
}
