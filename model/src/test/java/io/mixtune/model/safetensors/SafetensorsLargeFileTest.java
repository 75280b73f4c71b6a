package io.mixtune.model.safetensors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A 3 GB checkpoint made sparse with setLength, so it costs no disk: opening must read only the header, and a tensor
 * stored past the 2 GiB mark (beyond any single int-indexed mapping of the file) must still be readable.
 */
class SafetensorsLargeFileTest {
    private static final long BIG_BYTES = 3_000_000_000L;

    @TempDir
    Path dir;

    @Test
    void opensAHugeFileFromItsHeaderAndReadsATensorPastTwoGiB() throws IOException {
        Path file = dir.resolve("huge.safetensors");
        String json = "{\"__metadata__\":{\"format\":\"pt\"},"
                + "\"experts\":{\"dtype\":\"U8\",\"shape\":[3,1000000000],\"data_offsets\":[0," + BIG_BYTES + "]},"
                + "\"tail\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[" + BIG_BYTES + "," + (BIG_BYTES + 16) + "]}}";
        byte[] header = (json + " ".repeat((8 - json.length() % 8) % 8)).getBytes(StandardCharsets.UTF_8);
        long dataStart = 8 + header.length;
        try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
            raf.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(header.length).array());
            raf.write(header);
            raf.setLength(dataStart + BIG_BYTES + 16);
            raf.seek(dataStart + BIG_BYTES);
            raf.write(HandBuiltSafetensors.littleEndianFloats(1f, -2f, 0.5f, 1e30f));
        }

        // The fastest of three opens, so class loading, JIT and a busy machine do not decide the outcome.
        long fastestMillis = Long.MAX_VALUE;
        for (int i = 0; i < 3; i++) {
            long started = System.nanoTime();
            SafetensorsReader.open(file).close();
            fastestMillis = Math.min(fastestMillis, (System.nanoTime() - started) / 1_000_000);
        }
        // Reading 3 GB, even sparse zeros, takes the better part of a second; the header takes microseconds.
        assertTrue(fastestMillis < 200, "open took " + fastestMillis + " ms: it must read only the header");
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            assertEquals(BIG_BYTES, reader.info("experts").byteLength());
            assertEquals(BIG_BYTES, reader.info("experts").numel());
            assertEquals(dataStart + BIG_BYTES, reader.info("tail").dataOffset());
            assertArrayEquals(new float[] {1f, -2f, 0.5f, 1e30f}, reader.readFloats("tail"));

            CheckpointException e = assertThrows(CheckpointException.class, () -> reader.bytes("experts"));
            assertTrue(e.getMessage().contains("'experts'") && e.getMessage().contains("2 GiB"), e.getMessage());
        }
        assertTrue(Files.size(file) > BIG_BYTES);
    }
}
