package io.mixtune.model.safetensors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSource;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SafetensorsRoundTripTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path dir;

    private static TensorSource from(Map<String, float[]> data) {
        return spec -> data.get(spec.name());
    }

    private static short[] shorts(ByteBuffer bytes) {
        short[] out = new short[bytes.remaining() / 2];
        bytes.asShortBuffer().get(out);
        return out;
    }

    private static short[] halves(int... bits) {
        short[] out = new short[bits.length];
        for (int i = 0; i < bits.length; i++) {
            out[i] = (short) bits[i];
        }
        return out;
    }

    private static void assertSameBits(float[] expected, float[] actual) {
        assertEquals(expected.length, actual.length);
        for (int i = 0; i < expected.length; i++) {
            assertEquals(Float.floatToRawIntBits(expected[i]), Float.floatToRawIntBits(actual[i]), "element " + i);
        }
    }

    private List<String> listDir() throws IOException {
        try (Stream<Path> files = Files.list(dir)) {
            return files.map(p -> p.getFileName().toString()).sorted().collect(Collectors.toList());
        }
    }

    @Test
    void float32RoundTripsBitForBit() {
        float[] values = {1.0f, -2.5f, 65504f, 1e-7f, -0.0f, Float.MIN_VALUE, Float.MAX_VALUE,
                Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, 3.14159f, 0f};
        Path file = dir.resolve("f32.safetensors");
        SafetensorsWriter.writeFile(file, List.of(new TensorSpec("w", DType.F32, new long[] {3, 4})),
                from(Map.of("w", values)));
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            TensorInfo info = reader.info("w");
            assertEquals(DType.F32, info.dtype());
            assertArrayEquals(new long[] {3, 4}, info.shape());
            assertEquals(12, info.numel());
            assertEquals(48, info.byteLength());
            assertEquals(file, info.file());
            assertSameBits(values, reader.readFloats("w"));
            assertEquals(List.of(file), reader.files());
        }
    }

    @Test
    void float16StoresNumpyBitsAndReadsBack() {
        float[] values = {1.0f, -2.5f, 65504f, 1e-7f, 65520f, Float.POSITIVE_INFINITY, Float.NaN, -0.0f};
        Path file = dir.resolve("f16.safetensors");
        SafetensorsWriter.writeFile(file, List.of(new TensorSpec("h", DType.F16, new long[] {8})),
                from(Map.of("h", values)));
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            assertArrayEquals(halves(0x3c00, 0xc100, 0x7bff, 0x0002, 0x7c00, 0x7c00, 0x7e00, 0x8000),
                    shorts(reader.bytes("h")));
            assertSameBits(new float[] {1.0f, -2.5f, 65504f, 0x1p-23f, Float.POSITIVE_INFINITY,
                    Float.POSITIVE_INFINITY, Float.NaN, -0.0f}, reader.readFloats("h"));
        }
    }

    @Test
    void bfloat16StoresRoundedBitsAndReadsBack() {
        float tieToEvenDown = Float.intBitsToFloat(0x3f808000);
        float tieToEvenUp = Float.intBitsToFloat(0x3f818000);
        float[] values = {1.0f, -2.5f, tieToEvenDown, tieToEvenUp, 65504f, Float.NaN, Float.NEGATIVE_INFINITY};
        Path file = dir.resolve("bf16.safetensors");
        SafetensorsWriter.writeFile(file, List.of(new TensorSpec("b", DType.BF16, new long[] {7})),
                from(Map.of("b", values)));
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            assertArrayEquals(halves(0x3f80, 0xc020, 0x3f80, 0x3f82, 0x4780, 0x7fc0, 0xff80), shorts(reader.bytes("b")));
            float[] back = reader.readFloats("b");
            assertEquals(1.0f, back[2]);
            assertEquals(Float.intBitsToFloat(0x3f820000), back[3]);
            assertEquals(65536f, back[4]);
            assertTrue(Float.isNaN(back[5]));
        }
    }

    @Test
    void integerDtypesAreWrittenFromRawBytesAndNotReadAsFloats() {
        Path file = dir.resolve("ints.safetensors");
        byte[] u8 = {0, 1, (byte) 255, 7};
        byte[] i8 = {-128, 127};
        SafetensorsWriter.writeFile(file,
                List.of(new TensorSpec("u", DType.U8, new long[] {2, 2}), new TensorSpec("i", DType.I8, new long[] {2})),
                new TensorSource() {
                    @Override
                    public float[] floats(TensorSpec spec) {
                        throw new AssertionError("integer tensors must be asked for raw bytes");
                    }

                    @Override
                    public byte[] rawBytes(TensorSpec spec) {
                        return spec.name().equals("u") ? u8 : i8;
                    }
                });
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            ByteBuffer u = reader.bytes("u");
            byte[] back = new byte[4];
            u.get(back);
            assertArrayEquals(u8, back);
            assertTrue(u.isReadOnly());
            assertEquals(ByteOrder.LITTLE_ENDIAN, u.order());
            assertEquals(-128, reader.bytes("i").get(0));
            CheckpointException e = assertThrows(CheckpointException.class, () -> reader.readFloats("u"));
            assertTrue(e.getMessage().contains(file.toString()) && e.getMessage().contains("'u'")
                    && e.getMessage().contains("U8"), e.getMessage());
        }
    }

    @Test
    void scalarAndEmptyTensorsRoundTrip() {
        Path file = dir.resolve("edge.safetensors");
        SafetensorsWriter.writeFile(file,
                List.of(new TensorSpec("scalar", DType.F32, new long[0]),
                        new TensorSpec("empty", DType.BF16, new long[] {0, 4}),
                        new TensorSpec("after", DType.F16, new long[] {1})),
                from(Map.of("scalar", new float[] {42f}, "empty", new float[0], "after", new float[] {0.5f})));
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            assertEquals(1, reader.info("scalar").numel());
            assertArrayEquals(new float[] {42f}, reader.readFloats("scalar"));
            assertEquals(0, reader.readFloats("empty").length);
            assertEquals(0, reader.bytes("empty").remaining());
            assertArrayEquals(new float[] {0.5f}, reader.readFloats("after"));
        }
    }

    /** Pins the byte layout: exact JSON, metadata {"format": "pt"}, space padding to a multiple of 8. */
    @Test
    void headerIsAlignedPaddedAndCarriesFormatPt() throws IOException {
        Path file = dir.resolve("layout.safetensors");
        SafetensorsWriter.writeFile(file,
                List.of(new TensorSpec("a", DType.F32, new long[] {2}), new TensorSpec("b", DType.BF16, new long[] {3})),
                from(Map.of("a", new float[] {1f, 2f}, "b", new float[] {1f, 2f, 3f})));
        byte[] bytes = Files.readAllBytes(file);
        long headerLength = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
        assertEquals(0, headerLength % 8, "data buffer must start 8-byte aligned");
        assertEquals(8 + headerLength + 8 + 6, bytes.length);
        String header = new String(bytes, 8, (int) headerLength, StandardCharsets.UTF_8);
        String json = "{\"__metadata__\":{\"format\":\"pt\"},"
                + "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                + "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[8,14]}}";
        assertEquals(json, header.stripTrailing());
        assertTrue(header.substring(json.length()).chars().allMatch(c -> c == ' '));
        assertTrue(header.length() - json.length() < 8);
        assertEquals(1f, ByteBuffer.wrap(bytes, (int) (8 + headerLength), 4).order(ByteOrder.LITTLE_ENDIAN).getFloat());
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            assertEquals(Map.of("format", "pt"), reader.metadata());
            assertEquals(List.of("a", "b"), new ArrayList<>(reader.names()));
        }
    }

    @Test
    void shardsByTensorBytesAndWritesTransformersIndex() throws IOException {
        List<TensorSpec> specs = List.of(
                new TensorSpec("model.embed_tokens.weight", DType.F32, new long[] {10}), // 40 bytes
                new TensorSpec("model.layers.0.mlp.w1", DType.F32, new long[] {10}), // 40: fits, 80 <= 100
                new TensorSpec("model.layers.0.mlp.w2", DType.BF16, new long[] {10, 10}), // 200: larger than the max, alone
                new TensorSpec("lm_head.weight", DType.F16, new long[] {2, 2})); // 8: new shard after the big one
        Map<String, float[]> data = new LinkedHashMap<>();
        for (TensorSpec spec : specs) {
            float[] values = new float[(int) spec.numel()];
            for (int i = 0; i < values.length; i++) {
                values[i] = i * 0.25f + spec.name().length();
            }
            data.put(spec.name(), values);
        }
        List<String> askedFor = new ArrayList<>();
        List<Path> written = SafetensorsWriter.writeCheckpoint(dir, specs, 100, spec -> {
            askedFor.add(spec.name());
            return data.get(spec.name());
        });

        assertEquals(specs.stream().map(TensorSpec::name).collect(Collectors.toList()), askedFor,
                "the source is asked once per tensor, in spec order");
        assertEquals(List.of(dir.resolve("model-00001-of-00003.safetensors"),
                dir.resolve("model-00002-of-00003.safetensors"),
                dir.resolve("model-00003-of-00003.safetensors")), written);
        assertEquals(List.of("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                "model-00003-of-00003.safetensors", "model.safetensors.index.json"), listDir());

        String indexText = Files.readString(dir.resolve("model.safetensors.index.json"));
        JsonNode index = JSON.readTree(indexText);
        assertEquals(40 + 40 + 200 + 8, index.get("metadata").get("total_size").asLong());
        JsonNode weightMap = index.get("weight_map");
        assertEquals(4, weightMap.size());
        assertEquals("model-00001-of-00003.safetensors", weightMap.get("model.embed_tokens.weight").asText());
        assertEquals("model-00001-of-00003.safetensors", weightMap.get("model.layers.0.mlp.w1").asText());
        assertEquals("model-00002-of-00003.safetensors", weightMap.get("model.layers.0.mlp.w2").asText());
        assertEquals("model-00003-of-00003.safetensors", weightMap.get("lm_head.weight").asText());
        List<String> keys = new ArrayList<>();
        weightMap.fieldNames().forEachRemaining(keys::add);
        assertEquals(keys.stream().sorted().collect(Collectors.toList()), keys, "weight_map sorted like sort_keys=True");
        assertTrue(indexText.startsWith("{\n  \"metadata\": {\n    \"total_size\": 288\n  },\n  \"weight_map\": {\n"),
                indexText);

        try (SafetensorsReader reader = SafetensorsReader.open(dir)) {
            assertEquals(written, reader.files());
            assertEquals(Map.of("format", "pt"), reader.metadata());
            assertEquals(data.keySet(), reader.names());
            assertSameBits(data.get("model.embed_tokens.weight"), reader.readFloats("model.embed_tokens.weight"));
            assertSameBits(data.get("model.layers.0.mlp.w1"), reader.readFloats("model.layers.0.mlp.w1"));
            assertEquals(written.get(1), reader.info("model.layers.0.mlp.w2").file());
            // All values are multiples of 0.25 below 64: exact in both bf16 and f16.
            assertSameBits(data.get("model.layers.0.mlp.w2"), reader.readFloats("model.layers.0.mlp.w2"));
            assertSameBits(data.get("lm_head.weight"), reader.readFloats("lm_head.weight"));
        }
    }

    @Test
    void oneShardIsModelSafetensorsWithoutIndex() throws IOException {
        List<Path> written = SafetensorsWriter.writeCheckpoint(dir,
                List.of(new TensorSpec("a", DType.F32, new long[] {2})), 1L << 30,
                from(Map.of("a", new float[] {1f, 2f})));
        assertEquals(List.of(dir.resolve("model.safetensors")), written);
        assertEquals(List.of("model.safetensors"), listDir());
    }

    @Test
    void rewritingADirectoryReplacesTheEarlierCheckpointOnly() throws IOException {
        Files.writeString(dir.resolve("config.json"), "{}");
        Path adapter = dir.resolve("adapter_model.safetensors");
        SafetensorsWriter.writeFile(adapter, List.of(new TensorSpec("lora_A", DType.F32, new long[] {1})),
                from(Map.of("lora_A", new float[] {9f})));
        List<TensorSpec> sharded = List.of(new TensorSpec("a", DType.F32, new long[] {4}),
                new TensorSpec("b", DType.F32, new long[] {4}));
        SafetensorsWriter.writeCheckpoint(dir, sharded, 16,
                from(Map.of("a", new float[] {1, 2, 3, 4}, "b", new float[] {5, 6, 7, 8})));
        assertTrue(Files.exists(dir.resolve("model.safetensors.index.json")));

        SafetensorsWriter.writeCheckpoint(dir, List.of(new TensorSpec("c", DType.F16, new long[] {1})), 1 << 20,
                from(Map.of("c", new float[] {3f})));
        assertEquals(List.of("adapter_model.safetensors", "config.json", "model.safetensors"), listDir());

        // And back to shards: the single file must go, or a reader would see two checkpoints.
        SafetensorsWriter.writeCheckpoint(dir, sharded, 16,
                from(Map.of("a", new float[] {1, 2, 3, 4}, "b", new float[] {5, 6, 7, 8})));
        assertEquals(List.of("adapter_model.safetensors", "config.json", "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors", "model.safetensors.index.json"), listDir());
        try (SafetensorsReader reader = SafetensorsReader.open(dir)) {
            assertEquals(List.of("a", "b"), new ArrayList<>(reader.names()));
        }
    }

    @Test
    void aFailingSourceLeavesTheEarlierCheckpointAndNoPartialFiles() throws IOException {
        SafetensorsWriter.writeCheckpoint(dir, List.of(new TensorSpec("old", DType.F32, new long[] {1})), 1 << 20,
                from(Map.of("old", new float[] {1f})));
        List<TensorSpec> specs = List.of(new TensorSpec("x", DType.F32, new long[] {2}),
                new TensorSpec("y", DType.F32, new long[] {2}));
        RuntimeException boom = new IllegalStateException("GPU went away");
        RuntimeException thrown = assertThrows(IllegalStateException.class, () -> SafetensorsWriter.writeCheckpoint(dir,
                specs, 8, spec -> {
                    if (spec.name().equals("y")) {
                        throw boom;
                    }
                    return new float[] {1f, 2f};
                }));
        assertEquals(boom, thrown);
        assertEquals(List.of("model.safetensors"), listDir());
        try (SafetensorsReader reader = SafetensorsReader.open(dir)) {
            assertEquals(List.of("old"), new ArrayList<>(reader.names()));
        }
    }

    /** Checkpoints are shared between users and containers: they must not end up owner-only like a temp file. */
    @Test
    void writtenFilesGetOrdinaryPermissionsNotTempFileOnes() throws IOException {
        Path plain = Files.createFile(dir.resolve("plain.txt"));
        assumeTrue(Files.getFileStore(plain).supportsFileAttributeView("posix"));
        SafetensorsWriter.writeCheckpoint(dir, List.of(new TensorSpec("a", DType.F32, new long[] {1}),
                new TensorSpec("b", DType.F32, new long[] {1})), 4, spec -> new float[1]);
        for (String name : List.of("model-00001-of-00002.safetensors", "model.safetensors.index.json")) {
            assertEquals(Files.getPosixFilePermissions(plain), Files.getPosixFilePermissions(dir.resolve(name)), name);
        }
    }

    @Test
    void aSourceGivingTheWrongLengthIsRejectedByName() throws IOException {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> SafetensorsWriter.writeCheckpoint(
                dir, List.of(new TensorSpec("q_proj", DType.BF16, new long[] {2, 3})), 1 << 20,
                spec -> new float[5]));
        assertTrue(e.getMessage().contains("'q_proj'") && e.getMessage().contains("expected 6"), e.getMessage());
        assertEquals(List.of(), listDir());
    }

    @Test
    void specsAreValidated() {
        assertThrows(IllegalArgumentException.class, () -> new TensorSpec("w", DType.F32, new long[] {-1}));
        assertThrows(IllegalArgumentException.class, () -> new TensorSpec("__metadata__", DType.F32, new long[] {1}));
        assertThrows(IllegalArgumentException.class, () -> SafetensorsWriter.writeCheckpoint(dir,
                List.of(new TensorSpec("w", DType.F32, new long[] {1}), new TensorSpec("w", DType.F32, new long[] {1})),
                1 << 20, spec -> new float[1]));
        assertThrows(IllegalArgumentException.class, () -> SafetensorsWriter.writeCheckpoint(dir, List.of(), 0,
                spec -> new float[0]));
    }

    @Test
    void tensorsLargerThanTheConversionChunkStreamCorrectly() {
        int n = (1 << 20) / 4 * 3 + 17; // three 1 MiB chunks of f32 and a ragged tail
        float[] values = new float[n];
        for (int i = 0; i < n; i++) {
            values[i] = (i % 1000) * 0.5f;
        }
        SafetensorsWriter.writeCheckpoint(dir, List.of(new TensorSpec("big", DType.F32, new long[] {n}),
                new TensorSpec("big16", DType.F16, new long[] {n})), 1L << 40, spec -> values);
        try (SafetensorsReader reader = SafetensorsReader.open(dir)) {
            assertSameBits(values, reader.readFloats("big"));
            assertSameBits(values, reader.readFloats("big16"));
        }
    }

    @Test
    void readerDirectoryRulesPreferIndexThenModelSafetensorsThenAllFiles() throws IOException {
        Path stray = dir.resolve("weights.safetensors");
        SafetensorsWriter.writeFile(stray, List.of(new TensorSpec("stray", DType.F32, new long[] {1})),
                spec -> new float[1]);
        try (SafetensorsReader reader = SafetensorsReader.open(dir)) {
            assertEquals(List.of(stray), reader.files(), "no index, no model.safetensors: every *.safetensors");
        }
        SafetensorsWriter.writeCheckpoint(dir, List.of(new TensorSpec("single", DType.F32, new long[] {1})), 1 << 20,
                spec -> new float[1]);
        try (SafetensorsReader reader = SafetensorsReader.open(dir)) {
            assertEquals(List.of("single"), new ArrayList<>(reader.names()));
        }
        SafetensorsWriter.writeCheckpoint(dir, List.of(new TensorSpec("s1", DType.F32, new long[] {1}),
                new TensorSpec("s2", DType.F32, new long[] {1})), 4, spec -> new float[1]);
        try (SafetensorsReader reader = SafetensorsReader.open(dir)) {
            assertEquals(List.of("s1", "s2"), new ArrayList<>(reader.names()));
            assertFalse(reader.contains("stray"));
            assertTrue(reader.contains("s1"));
        }
    }

    @Test
    void buffersOutliveTheReaderButTheReaderRefusesAfterClose() {
        Path file = dir.resolve("c.safetensors");
        SafetensorsWriter.writeFile(file, List.of(new TensorSpec("w", DType.F32, new long[] {1})),
                spec -> new float[] {5f});
        SafetensorsReader reader = SafetensorsReader.open(file);
        ByteBuffer bytes = reader.bytes("w");
        reader.close();
        assertEquals(5f, bytes.getFloat(0));
        assertThrows(IllegalStateException.class, () -> reader.bytes("w"));
    }

    @Test
    void rangedReadsReturnExactlyTheRequestedElements(@TempDir Path dir) {
        float[] values = new float[24];
        for (int i = 0; i < values.length; i++) {
            values[i] = i * 0.5f - 3f; // exact in bf16 and f16
        }
        for (DType dtype : List.of(DType.F32, DType.F16, DType.BF16)) {
            Path file = dir.resolve(dtype + ".safetensors");
            // Another tensor first, so the ranged read must add the tensor's own offset.
            SafetensorsWriter.writeFile(file, List.of(new TensorSpec("before", dtype, new long[] {3}),
                    new TensorSpec("experts", dtype, new long[] {2, 3, 4})),
                    spec -> spec.name().equals("before") ? new float[] {9, 9, 9} : values);
            try (SafetensorsReader reader = SafetensorsReader.open(file)) {
                assertArrayEquals(java.util.Arrays.copyOfRange(values, 12, 24), reader.readFloats("experts", 12, 12),
                        dtype + ": the second expert");
                assertArrayEquals(new float[] {values[5]}, reader.readFloats("experts", 5, 1), dtype.toString());
                assertEquals(0, reader.readFloats("experts", 24, 0).length);
                IllegalArgumentException outside = assertThrows(IllegalArgumentException.class,
                        () -> reader.readFloats("experts", 20, 5));
                assertTrue(outside.getMessage().contains("[20, 25)") && outside.getMessage().contains("experts"),
                        outside.getMessage());
            }
        }
    }
}
