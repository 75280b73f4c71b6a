package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.merging.gguf.GgufReader;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.trainer.PresetCheckpoint;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * `mixtune export-gguf --type q4_k_m` (q5_k_m, q6_k, q4_k_s, q5_k_s, q3_k_m, q3_k_s, q3_k_l, q2_k, q4_1, q5_0, q5_1;
 * some cases with llama-quantize's --pure, --output-tensor-type, --token-embedding-type, --leave-output-tensor)
 * writes what llama.cpp's llama-quantize (no imatrix) makes of `export-gguf --type f32`, byte for byte, on as many
 * encoding threads as the machine has (the --threads default): the whole file, every
 * tensor's type and bytes, the metadata keys' order (golden/gguf/llama-quantize.json,
 * interop/make_gguf_kquant_goldens.py). tiny-mistral (fp32) and tiny-mixtral (bf16), whose rows of 64 to 192 values
 * take llama-quantize's fallbacks (Q4_0, Q5_0, Q5_1, Q8_0); wide-mistral and wide-mixtral (8 experts), rows of 256 and
 * 512 with weights from an integer hash, take the k-quants themselves and the per-layer and 8-expert rules.
 */
class ExportGgufKQuantTest {
    private static final Path GOLDEN = Path.of("src/test/resources/golden/gguf/llama-quantize.json");
    private static final Path TOKENIZER = Path.of("../configs/tokenizer/mistral-v1");

    @TempDir
    static Path models;

    static Stream<String> cases() throws Exception {
        List<String> names = new ArrayList<>();
        new ObjectMapper().readTree(Files.readString(GOLDEN)).path("cases")
                .forEach(entry -> names.add(entry.path("name").asText()));
        return names.stream();
    }

    private static JsonNode golden(String name) throws Exception {
        for (JsonNode entry : new ObjectMapper().readTree(Files.readString(GOLDEN)).path("cases")) {
            if (entry.path("name").asText().equals(name)) {
                return entry;
            }
        }
        throw new AssertionError("no golden case " + name);
    }

    @ParameterizedTest
    @MethodSource("cases")
    void writesWhatLlamaQuantizeMakesOfTheF32Export(String name, @TempDir Path dir) throws Exception {
        JsonNode entry = golden(name);
        String preset = entry.path("preset").asText();
        // one checkpoint per preset for all its cases (the export only reads it): writing one is most of a case's time
        Path model = models.resolve(preset);
        if (!Files.isDirectory(model)) {
            JsonNode wide = new ObjectMapper().readTree(Files.readString(GOLDEN)).path("checkpoints").path(preset);
            if (!wide.isMissingNode()) {
                writeWide(wide, model);
            } else {
                PresetCheckpoint.write(preset, model, entry.path("seed").asLong(),
                        InitModelCommand.parseDtype(entry.path("dtype").asText()));
            }
        }
        Path out = dir.resolve(name + ".gguf");
        List<String> args = new ArrayList<>(List.of("export-gguf", "--model", model.toString(), "--out",
                out.toString(), "--type", entry.path("type").asText()));
        entry.path("options").forEach(option -> args.add(option.asText()));
        MixtuneCliTest.Result result = MixtuneCliTest.run(args.toArray(String[]::new));
        assertEquals(0, result.code(), result.err());
        assertSameFile(entry, out);
    }

    /**
     * The golden case's file (llama-quantize's): metadata keys in order, tensors in order with their types and bytes,
     * the whole file's sha256 and size.
     */
    static void assertSameFile(JsonNode entry, Path out) throws Exception {
        GgufReader reader = GgufReader.open(out);
        List<String> keys = new ArrayList<>();
        entry.path("metadata_keys").forEach(key -> keys.add(key.asText()));
        assertEquals(keys, List.copyOf(reader.metadata().keySet()), "metadata keys in llama-quantize's order");
        List<String> tensors = new ArrayList<>();
        entry.path("tensors").forEach(tensor -> tensors.add(tensor.path("name").asText()));
        assertEquals(tensors, List.copyOf(reader.tensors().keySet()), "tensors in llama-quantize's order");
        for (JsonNode expected : entry.path("tensors")) {
            GgufReader.TensorInfo info = reader.tensors().get(expected.path("name").asText());
            assertEquals(expected.path("type").asText(), info.type().name(), info.name());
            assertEquals(expected.path("sha256").asText(), sha256(reader.bytes(info.name())), info.name());
        }
        assertEquals(entry.path("file_sha256").asText(), sha256(Files.readAllBytes(out)), "the whole file");
        assertEquals(entry.path("file_size").asLong(), Files.size(out));
    }

    /** A llama-quantize type mixtune does not write is refused by name, exit 2, nothing written. */
    @org.junit.jupiter.api.Test
    void aTypeWithoutAByteEqualQuantizerIsRefusedByName(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("tiny-mistral");
        PresetCheckpoint.write("tiny-mistral", model, 0, DType.F32);
        Path out = dir.resolve("model.gguf");
        MixtuneCliTest.Result result = MixtuneCliTest.run("export-gguf", "--model", model.toString(), "--out",
                out.toString(), "--type", "iq2_xs");
        assertEquals(2, result.code());
        org.junit.jupiter.api.Assertions.assertTrue(result.err().contains("--type iq2_xs is a llama-quantize type"
                + " mixtune does not write"), result.err());
        org.junit.jupiter.api.Assertions.assertFalse(Files.exists(out));
    }

    /**
     * Where llama-quantize gives a tensor a type without a fallback (--pure, --output-tensor-type,
     * --token-embedding-type) and its rows are not whole blocks of it, llama-quantize fails (measured: --pure q4_k_m on
     * tiny-mistral aborts on GGML_ASSERT "tensor row size not divisible by block size of new type";
     * --output-tensor-type q6_K: "quantized data validation failed"); export-gguf refuses it naming the tensor, exit 2,
     * nothing written. The options are llama-quantize's: a convert_hf_to_gguf.py type refuses them.
     */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.CsvSource(delimiter = '|', value = {
        "q4_k_m --pure | --pure: output.weight has rows of 64 values, not whole Q4_K blocks of 256",
        "q4_k_m --output-tensor-type q6_K | --output-tensor-type: output.weight has rows of 64 values",
        "q4_k_m --token-embedding-type iq2_xs | --token-embedding-type iq2_xs is not a ggml type mixtune encodes",
        "q4_k_m --threads 0 | --threads 0 is under 1",
        "f16 --pure | --type f16 is convert_hf_to_gguf.py's, which has none of them"})
    void optionsLlamaQuantizeCannotApplyAreRefused(String typeAndOptions, String why, @TempDir Path dir)
            throws Exception {
        // the golden cases' tiny-mistral (fp32, seed 0), written once: the refusals only read it
        Path model = models.resolve("tiny-mistral");
        if (!Files.isDirectory(model)) {
            PresetCheckpoint.write("tiny-mistral", model, 0, DType.F32);
        }
        Path out = dir.resolve("model.gguf");
        List<String> args = new ArrayList<>(List.of("export-gguf", "--model", model.toString(), "--out",
                out.toString(), "--type"));
        args.addAll(List.of(typeAndOptions.split(" ")));
        MixtuneCliTest.Result result = MixtuneCliTest.run(args.toArray(String[]::new));
        assertEquals(2, result.code(), result.err());
        org.junit.jupiter.api.Assertions.assertTrue(result.err().contains(why), result.err());
        org.junit.jupiter.api.Assertions.assertFalse(Files.exists(out));
    }

    /**
     * llama-quantize refuses an f32 file with a NaN or an infinity in any tensor (llama_model_loader::load_data_for,
     * check_tensors: "tensor 'blk.1.attn_q.weight' has invalid data"), and a tensor whose quantized fp16 scales
     * overflow (ggml_validate_row_data: "quantized data validation failed"): a k-quant mix refuses them too, naming the
     * tensor, exit 2, nothing written (measured with the llama-quantize build of interop/build_llama_quantize.sh).
     */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.CsvSource({
        "NaN, model.layers.1.self_attn.q_proj.weight, blk.1.attn_q.weight, NaN",
        "Infinity, model.layers.0.post_attention_layernorm.weight, blk.0.ffn_norm.weight, Infinity",
        "1e38, model.layers.0.mlp.down_proj.weight, blk.0.ffn_down.weight, fp16 scale"})
    void aValueLlamaQuantizeRefusesIsRefused(float value, String hfName, String ggufName, String why,
            @TempDir Path dir) throws Exception {
        Path model = dir.resolve("tiny-mistral");
        PresetCheckpoint.write("tiny-mistral", model, 0, DType.F32);
        setFirstValue(model.resolve("model.safetensors"), hfName, value);
        Path out = dir.resolve("model.gguf");
        MixtuneCliTest.Result result = MixtuneCliTest.run("export-gguf", "--model", model.toString(), "--out",
                out.toString(), "--type", "q4_k_m");
        assertEquals(2, result.code(), result.err());
        org.junit.jupiter.api.Assertions.assertTrue(result.err().contains(ggufName) && result.err().contains(why),
                result.err());
        org.junit.jupiter.api.Assertions.assertFalse(Files.exists(out));
        try (Stream<Path> left = Files.list(dir)) {
            assertEquals(List.of("tiny-mistral"), left.map(p -> p.getFileName().toString()).toList());
        }
    }

    /** Overwrites the first float32 of tensor {@code name} in a safetensors file. */
    private static void setFirstValue(Path file, String name, float value) throws Exception {
        byte[] bytes = Files.readAllBytes(file);
        java.nio.ByteBuffer buffer = java.nio.ByteBuffer.wrap(bytes).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        int headerLength = Math.toIntExact(buffer.getLong(0));
        JsonNode header = new ObjectMapper().readTree(new String(bytes, 8, headerLength,
                java.nio.charset.StandardCharsets.UTF_8));
        assertEquals("F32", header.path(name).path("dtype").asText(), name);
        buffer.putFloat(8 + headerLength + header.path(name).path("data_offsets").get(0).asInt(), value);
        Files.write(file, bytes);
    }

    /**
     * make_gguf_kquant_goldens.wide_weights, value for value: tensor t of the names sorted, flat index i,
     * u = (i * 2654435761 + (t + 1) * 1013904223) mod 2^32, v = (u >> 8) / 2^24 - 0.5 (exact in float32); a matrix's
     * row r scaled by 2^-(r mod 5), zero where r mod 7 is 3; a vector 1 + v / 4. The bundled tokenizer's files beside.
     */
    static void writeWide(JsonNode checkpoint, Path model) throws Exception {
        Files.createDirectories(model);
        Files.writeString(model.resolve("config.json"), new ObjectMapper().writerWithDefaultPrettyPrinter()
                .writeValueAsString(checkpoint.path("config")));
        List<SafetensorsWriter.TensorSpec> specs = new ArrayList<>();
        for (JsonNode tensor : checkpoint.path("tensors")) {
            specs.add(new SafetensorsWriter.TensorSpec(tensor.get(0).asText(), DType.F32,
                    new ObjectMapper().convertValue(tensor.get(1), long[].class)));
        }
        SafetensorsWriter.writeFile(model.resolve("model.safetensors"), specs, spec -> {
            int t = specs.indexOf(spec);
            long[] shape = spec.shape();
            float[] values = new float[Math.toIntExact(spec.numel())];
            for (int i = 0; i < values.length; i++) {
                long u = (i * 2654435761L + (t + 1) * 1013904223L) & 0xFFFFFFFFL;
                float v = (float) (u >>> 8) * 0x1p-24f - 0.5f;
                if (shape.length == 1) {
                    values[i] = 1f + v * 0.25f;
                } else {
                    long row = i / shape[shape.length - 1];
                    values[i] = row % 7 == 3 ? 0f : v * (1f / (1 << (row % 5)));
                }
            }
            return values;
        });
        try (Stream<Path> files = Files.list(TOKENIZER)) {
            for (Path file : files.toList()) {
                Files.copy(file, model.resolve(file.getFileName()));
            }
        }
    }

    static String sha256(byte[] bytes) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
    }
}
