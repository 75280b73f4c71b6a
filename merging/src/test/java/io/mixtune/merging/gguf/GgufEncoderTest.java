package io.mixtune.merging.gguf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Encoding on several threads gives one thread's bytes, for every type, block counts that do not divide among the
 * threads, more threads than blocks, and a run that starts inside the values and the buffer.
 */
class GgufEncoderTest {
    @Test
    void anyNumberOfThreadsGivesOneThreadsBytes() {
        Random random = new Random(3);
        float[] values = new float[256 * 7 + 256];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (random.nextGaussian() * Math.exp(random.nextGaussian() * 3));
        }
        for (GgmlType type : GgmlType.values()) {
            int from = type.blockSize() == 1 ? 5 : 256; // a run that starts past the first values
            int count = type.blockSize() == 1 ? 1000 : 256 * 7;
            byte[] one = encode(values, from, count, type, 1);
            for (int threads : new int[] {2, 3, 8, 100}) {
                assertArrayEquals(one, encode(values, from, count, type, threads), type + " on " + threads);
            }
        }
    }

    private static byte[] encode(float[] values, int from, int count, GgmlType type, int threads) {
        ByteBuffer out = ByteBuffer.allocate(Math.toIntExact(32 + type.bytes(count))).order(ByteOrder.LITTLE_ENDIAN);
        out.put(new byte[16]); // bytes already in the buffer stay, and the encoding starts after them
        try (GgufEncoder encoder = new GgufEncoder(threads)) {
            encoder.encode(values, from, count, type, out);
        }
        assertEquals(16 + type.bytes(count), out.position(), type + " on " + threads);
        return Arrays.copyOf(out.array(), out.position());
    }
}
