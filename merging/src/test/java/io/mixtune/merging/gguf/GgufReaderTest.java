package io.mixtune.merging.gguf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * GgufReader reads files past 2 GiB, the size of any real export (a 7B model is 14 GB in f16, 7.7 GB in q8_0): the
 * file is built sparse here, its last tensor's data 3 GiB into the data section, so the test writes a few hundred
 * bytes.
 */
class GgufReaderTest {

    @Test
    void readsAFileLargerThan2GiBWithATensorPastIt(@TempDir Path dir) throws Exception {
        long farOffset = 3L << 30; // a multiple of the 32-byte alignment
        ByteBuffer header = ByteBuffer.allocate(4096).order(ByteOrder.LITTLE_ENDIAN);
        header.putInt(GgufWriter.MAGIC).putInt(GgufWriter.VERSION).putLong(2).putLong(1);
        string(header, "general.architecture");
        header.putInt(GgufWriter.STRING);
        string(header, "llama");
        for (String name : List.of("near", "far")) {
            string(header, name);
            header.putInt(1).putLong(32).putInt(GgmlType.F32.id()).putLong(name.equals("near") ? 0 : farOffset);
        }
        long dataStart = GgufWriter.padded(header.position());
        float[] near = new float[32];
        float[] far = new float[32];
        for (int i = 0; i < 32; i++) {
            near[i] = i;
            far[i] = -0.5f * i;
        }
        Path file = dir.resolve("big.gguf");
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            channel.write(header.flip(), 0);
            channel.write(floats(near), dataStart);
            channel.write(floats(far), dataStart + farOffset);
        }
        assertEquals(dataStart + farOffset + 128, Files.size(file));

        GgufReader reader = GgufReader.open(file);
        assertEquals("llama", reader.metadata().get("general.architecture").value());
        assertEquals(farOffset, reader.tensors().get("far").offset());
        assertArrayEquals(near, reader.floats("near"));
        assertArrayEquals(far, reader.floats("far"));
    }

    private static void string(ByteBuffer buffer, String text) {
        byte[] utf8 = text.getBytes(StandardCharsets.UTF_8);
        buffer.putLong(utf8.length).put(utf8);
    }

    private static ByteBuffer floats(float[] values) {
        ByteBuffer bytes = ByteBuffer.allocate(4 * values.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float value : values) {
            bytes.putFloat(value);
        }
        return bytes.flip();
    }
}
