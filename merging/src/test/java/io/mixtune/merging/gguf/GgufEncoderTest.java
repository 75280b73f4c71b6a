package io.mixtune.merging.gguf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

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

    /**
     * A quantizer's failure on a pool thread (here: a run that starts before the values) reaches the caller as itself,
     * as on one thread, once every run has ended.
     */
    @Test
    void aFailureOnAPoolThreadReachesTheCallerAsOnOneThread() {
        float[] values = new float[32 * 8];
        for (int threads : new int[] {1, 4}) {
            ByteBuffer out = ByteBuffer.allocate(1024).order(ByteOrder.LITTLE_ENDIAN);
            try (GgufEncoder encoder = new GgufEncoder(threads)) {
                // the first run (a pool thread's when there are several) reads values[-64]; the last one succeeds
                assertThrows(ArrayIndexOutOfBoundsException.class,
                        () -> encoder.encode(values, -64, 32 * 8, GgmlType.Q8_0, out), "on " + threads);
            }
        }
    }

    /**
     * GgufWriter names the tensor whose encoding failed, on any number of threads (a pool thread's exception carries
     * no frame of the writer's), as an internal failure (IllegalStateException: not the user's to fix).
     */
    @Test
    void theWriterNamesTheTensorWhoseEncodingFailed(@TempDir Path dir) {
        for (int threads : new int[] {1, 4}) {
            GgufWriter writer = new GgufWriter();
            writer.threads(threads);
            // a source that breaks its contract (a part of 48 values: not whole Q8_0 blocks), so the quantizer throws
            writer.addTensor("blk.0.attn_q.weight", new long[] {2, 64}, GgmlType.Q8_0, sink -> {
                sink.accept(new float[48]);
                sink.accept(new float[80]);
            });
            Path file = dir.resolve(threads + ".gguf");
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> writer.write(file));
            assertTrue(e.getMessage().contains("blk.0.attn_q.weight") && e.getMessage().contains("Q8_0"),
                    e.getMessage());
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
