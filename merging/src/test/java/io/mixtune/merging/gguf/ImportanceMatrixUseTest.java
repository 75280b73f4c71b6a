package io.mixtune.merging.gguf;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * quantize.imatrix.file and quantize.imatrix.dataset hold what llama-quantize's kv override holds: strncpy's first 127
 * bytes, cut inside a UTF-8 character where byte 127 falls in one and at a NUL (llama-quantize with --imatrix
 * dddd...dé/im.gguf, é on bytes 127-128, wrote the lone byte 0xC3; export-gguf wrote U+FFFD, measured).
 */
class ImportanceMatrixUseTest {
    @Test
    void keysHoldStrncpysBytes(@TempDir Path dir) throws Exception {
        String path = "d".repeat(126) + "é/im.gguf";
        ImportanceMatrix matrix = new ImportanceMatrix(Path.of(path), Map.of("output.weight", new float[] {1}),
                List.of("wiki\0raw"), 3);
        GgufWriter writer = new GgufWriter();
        ImportanceMatrixUse.putMetadata(writer, path, matrix);
        Path file = dir.resolve("keys.gguf");
        writer.write(file);
        String bytes = HexFormat.of().formatHex(Files.readAllBytes(file));
        byte[] cut = Arrays.copyOf(path.getBytes(StandardCharsets.UTF_8), 127);
        assertTrue(bytes.contains(HexFormat.of().formatHex(entry("quantize.imatrix.file", cut))), bytes);
        assertTrue(bytes.contains(HexFormat.of().formatHex(entry("quantize.imatrix.dataset",
                "wiki".getBytes(StandardCharsets.UTF_8)))), bytes);
    }

    /** A GGUF string key-value pair: key length and key, type 8 (string), value length and bytes. */
    private static byte[] entry(String key, byte[] value) {
        byte[] name = key.getBytes(StandardCharsets.UTF_8);
        return ByteBuffer.allocate(8 + name.length + 4 + 8 + value.length).order(ByteOrder.LITTLE_ENDIAN)
                .putLong(name.length).put(name).putInt(8).putLong(value.length).put(value).array();
    }
}
