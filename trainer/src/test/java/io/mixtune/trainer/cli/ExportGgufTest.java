package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.merging.gguf.GgmlType;
import io.mixtune.merging.gguf.GgufReader;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.PresetCheckpoint;
import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * `mixtune export-gguf` writes what llama.cpp's convert_hf_to_gguf.py writes for the merged checkpoint, byte for byte:
 * tiny-mistral with a random rank-4 adapter on every linear layer folded in (f32, f16, q8_0) and tiny-mixtral in bf16
 * (f16, q8_0, its experts stacked), tiny-mistral with a Hub instruct model's tokenizer files (added tokens control and
 * user-defined, add_bos/add_eos, a pad token, add_prefix_space, the template in chat_template.jinja), every metadata
 * key, tensor and the whole file (golden/gguf/converter.json,
 * interop/make_gguf_goldens.py). The merged weights read back; --out is never written over without --force, and never
 * inside an input.
 */
class ExportGgufTest {
    private static final Path GOLDEN = Path.of("src/test/resources/golden/gguf/converter.json");

    private static JsonNode golden(String name) throws Exception {
        return goldenCase(GOLDEN, name);
    }

    /** The case named {@code name} of a golden file whose "cases" each have a "name" (the make_gguf_* scripts'). */
    static JsonNode goldenCase(Path golden, String name) throws Exception {
        for (JsonNode entry : new ObjectMapper().readTree(Files.readString(golden)).path("cases")) {
            if (entry.path("name").asText().equals(name)) {
                return entry;
            }
        }
        throw new AssertionError("no golden case " + name);
    }

    /**
     * The golden case's model (and adapter) under {@code dir}: the model in a folder named as the preset, the case's
     * tokenizer files written over the preset's.
     */
    private static List<String> inputs(JsonNode entry, Path dir) throws Exception {
        String preset = entry.path("preset").asText();
        Path model = dir.resolve("base").resolve(preset);
        PresetCheckpoint.write(preset, model, entry.path("seed").asLong(),
                InitModelCommand.parseDtype(entry.path("dtype").asText()));
        for (Map.Entry<String, JsonNode> file : entry.path("files").properties()) {
            Files.writeString(model.resolve(file.getKey()), file.getValue().asText());
        }
        List<String> args = new ArrayList<>(List.of("--model", model.toString()));
        if (entry.path("adapter").isArray()) {
            Path adapter = dir.resolve("adapter");
            List<String> init = new ArrayList<>(List.of("init-adapter", "--model", model.toString(), "--out",
                    adapter.toString()));
            entry.path("adapter").forEach(arg -> init.add(arg.asText()));
            MixtuneCliTest.Result made = MixtuneCliTest.run(init.toArray(String[]::new));
            assertEquals(0, made.code(), made.err());
            args.addAll(List.of("--adapter", adapter.toString()));
        }
        return args;
    }

    private static MixtuneCliTest.Result export(List<String> inputs, Path out, String... extra) {
        List<String> args = new ArrayList<>(List.of("export-gguf"));
        args.addAll(inputs);
        args.addAll(List.of("--out", out.toString()));
        args.addAll(List.of(extra));
        return MixtuneCliTest.run(args.toArray(String[]::new));
    }

    @ParameterizedTest
    @ValueSource(strings = {"tiny-mistral-adapter-f32", "tiny-mistral-adapter-f16", "tiny-mistral-adapter-q8_0",
            "tiny-mixtral-bf16-f16", "tiny-mixtral-bf16-q8_0", "tiny-mistral-hub-tokenizer-q8_0"})
    void writesWhatLlamaCppsConverterWrites(String name, @TempDir Path dir) throws Exception {
        JsonNode entry = golden(name);
        Path out = dir.resolve(name + ".gguf");
        MixtuneCliTest.Result result = export(inputs(entry, dir), out, "--type", entry.path("outtype").asText());
        assertEquals(0, result.code(), result.err());
        assertConverterFile(entry, out);
    }

    /**
     * The file at {@code out} is the golden case's: its metadata keys in order with their types and values (arrays
     * by count and sha256), its tensors' names, shapes, types and bytes, and the whole file's sha256 and size.
     */
    static void assertConverterFile(JsonNode entry, Path out) throws Exception {
        GgufReader reader = GgufReader.open(out);
        List<String> keys = new ArrayList<>();
        entry.path("metadata").forEach(key -> keys.add(key.path("key").asText()));
        assertEquals(keys, List.copyOf(reader.metadata().keySet()), "metadata keys in the converter's order");
        for (JsonNode expected : entry.path("metadata")) {
            String key = expected.path("key").asText();
            GgufReader.Value actual = reader.metadata().get(key);
            assertEquals(expected.path("type").asText(), actual.type(), key);
            if (actual.value() instanceof List<?> elements) {
                assertEquals(expected.path("count").asInt(), elements.size(), key);
                assertEquals(expected.path("sha256").asText(), sha256(encoded(actual)), key);
            } else if (actual.value() instanceof String text) {
                assertEquals(expected.path("value").asText(), text, key);
            } else if (actual.value() instanceof Boolean flag) {
                assertEquals(expected.path("value").asBoolean(), flag, key);
            } else if (actual.value() instanceof Double number) {
                assertEquals(expected.path("value").asDouble(), number, 0.0, key);
            } else {
                assertEquals(expected.path("value").asLong(), (long) (Long) actual.value(), key);
            }
        }
        List<String> tensors = new ArrayList<>();
        entry.path("tensors").forEach(tensor -> tensors.add(tensor.path("name").asText()));
        assertEquals(tensors, List.copyOf(reader.tensors().keySet()), "tensors in the converter's order");
        for (JsonNode expected : entry.path("tensors")) {
            GgufReader.TensorInfo info = reader.tensors().get(expected.path("name").asText());
            long[] shape = new ObjectMapper().convertValue(expected.path("shape"), long[].class);
            assertArrayEquals(shape, info.dimensions(), info.name());
            assertEquals(expected.path("type").asText(), info.type().name(), info.name());
            assertEquals(expected.path("sha256").asText(), sha256(reader.bytes(info.name())), info.name());
        }
        assertEquals(entry.path("file_sha256").asText(), sha256(Files.readAllBytes(out)), "the whole file");
        assertEquals(entry.path("file_size").asLong(), Files.size(out));
    }

    /**
     * An f32 export of tiny-mistral with a rank-4 adapter holds W + (alpha / r) B A, computed here from the base and
     * adapter files, for every adapted weight: q_proj and k_proj with llama.cpp's row order undone (each head's rows
     * [r0, r(d/2), r1, ...] back to [r0, r1, ..., r(d/2), ...]).
     */
    @Test
    void anExportReadsBackWithTheAdapterMergedIn(@TempDir Path dir) throws Exception {
        JsonNode entry = golden("tiny-mistral-adapter-f32");
        List<String> inputs = inputs(entry, dir);
        Path out = dir.resolve("merged.gguf");
        assertEquals(0, export(inputs, out, "--type", "f32").code());
        GgufReader reader = GgufReader.open(out);
        double scale = 8.0 / 4.0;
        Map<String, String> names = Map.of("self_attn.q_proj", "attn_q", "self_attn.k_proj", "attn_k",
                "self_attn.v_proj", "attn_v", "self_attn.o_proj", "attn_output", "mlp.gate_proj", "ffn_gate",
                "mlp.up_proj", "ffn_up", "mlp.down_proj", "ffn_down");
        int checked = 0;
        try (SafetensorsReader base = SafetensorsReader.open(Path.of(inputs.get(1)));
                SafetensorsReader adapter = SafetensorsReader.open(Path.of(inputs.get(3),
                        "adapter_model.safetensors"))) {
            for (int layer = 0; layer < 2; layer++) {
                for (Map.Entry<String, String> module : names.entrySet()) {
                    String hf = "model.layers." + layer + "." + module.getKey();
                    long[] shape = base.info(hf + ".weight").shape();
                    int rows = (int) shape[0];
                    int columns = (int) shape[1];
                    float[] w = base.readFloats(hf + ".weight");
                    float[] a = adapter.readFloats("base_model.model." + hf + ".lora_A.weight");
                    float[] b = adapter.readFloats("base_model.model." + hf + ".lora_B.weight");
                    int rank = a.length / columns;
                    float[] gguf = reader.floats("blk." + layer + "." + module.getValue() + ".weight");
                    int heads = module.getKey().endsWith("q_proj") ? 4 : module.getKey().endsWith("k_proj") ? 2 : 0;
                    double largestDelta = 0;
                    for (int o = 0; o < rows; o++) {
                        int stored = heads == 0 ? o : llamaCppRow(o, rows / heads);
                        for (int i = 0; i < columns; i++) {
                            double delta = 0;
                            for (int k = 0; k < rank; k++) {
                                delta += (double) b[o * rank + k] * a[k * columns + i];
                            }
                            double expected = w[o * columns + i] + scale * delta;
                            largestDelta = Math.max(largestDelta, Math.abs(scale * delta));
                            assertEquals(expected, gguf[stored * columns + i], 1e-6 + 1e-6 * Math.abs(expected),
                                    hf + "[" + o + ", " + i + "]");
                        }
                    }
                    assertTrue(largestDelta > 1e-4, hf + " is changed by the adapter: " + largestDelta);
                    checked++;
                }
            }
        }
        assertEquals(14, checked);
        assertEquals(GgmlType.F32, reader.tensors().get("token_embd.weight").type());
    }

    /** Where transformers' row o of a head of headDim rows lies after LlamaModel.permute. */
    private static int llamaCppRow(int o, int headDim) {
        int head = o / headDim;
        int within = o % headDim;
        int half = headDim / 2;
        return head * headDim + (within % half) * 2 + within / half;
    }

    @Test
    void anExistingOutIsReplacedOnlyWithForceAndAnOutInsideAnInputNever(@TempDir Path dir) throws Exception {
        JsonNode entry = golden("tiny-mistral-adapter-q8_0");
        List<String> inputs = inputs(entry, dir);
        Path out = Files.writeString(dir.resolve("model.gguf"), "mine");
        Map<String, byte[]> before = MixtuneCliTest.snapshot(dir);

        MixtuneCliTest.Result refused = export(inputs, out, "--type", "q8_0");
        assertEquals(2, refused.code(), refused.err());
        assertTrue(refused.err().contains("exists") && refused.err().contains("--force"), refused.err());
        MixtuneCliTest.assertSameFiles(before, MixtuneCliTest.snapshot(dir));

        for (Path inside : List.of(Path.of(inputs.get(1), "model.gguf"), Path.of(inputs.get(3), "x.gguf"),
                Path.of(inputs.get(1)))) {
            MixtuneCliTest.Result overlap = export(inputs, inside, "--force");
            assertEquals(2, overlap.code(), inside + ": " + overlap.err());
            assertTrue(overlap.err().contains("the input "), overlap.err());
            MixtuneCliTest.assertSameFiles(before, MixtuneCliTest.snapshot(dir));
        }
        MixtuneCliTest.Result directory = export(inputs, dir.resolve("base"), "--force");
        assertEquals(2, directory.code(), directory.err());

        // a killed export's staging folder (its process ended) goes; a running one's (this pid) would stay
        Process ended = new ProcessBuilder("true").start();
        ended.waitFor();
        Path abandoned = Files.createDirectories(dir.resolve("model.gguf.gguf-staging-" + ended.pid() + "-1f2e3d"));
        Files.writeString(abandoned.resolve("model.gguf"), "half written");
        MixtuneCliTest.Result forced = export(inputs, out, "--type", "q8_0", "--force");
        assertEquals(0, forced.code(), forced.err());
        assertEquals(entry.path("file_sha256").asText(), sha256(Files.readAllBytes(out)));
        try (Stream<Path> siblings = Files.list(dir)) {
            assertEquals(List.of("adapter", "base", "model.gguf"),
                    siblings.map(p -> p.getFileName().toString()).sorted().toList(), "no staging left behind");
        }
        MixtuneCliTest.Result badType = export(inputs, dir.resolve("other.gguf"), "--type", "q5_k");
        assertEquals(2, badType.code(), badType.err());
        assertTrue(badType.err().contains("expected one of f32, f16, q4_0, q8_0"), badType.err());
        assertFalse(Files.exists(dir.resolve("other.gguf")));
    }

    /**
     * A symbolic link at --out is the user's file even when what it names is missing: it is replaced (the rename puts
     * the file where the link was) only with --force, as any existing --out.
     */
    @Test
    void aDanglingLinkAtOutIsReplacedOnlyWithForce(@TempDir Path dir) throws Exception {
        JsonNode entry = golden("tiny-mistral-adapter-q8_0");
        List<String> inputs = inputs(entry, dir);
        Path target = dir.resolve("disk").resolve("model.gguf");
        Path out = Files.createSymbolicLink(dir.resolve("model.gguf"), target);

        MixtuneCliTest.Result refused = export(inputs, out, "--type", "q8_0");
        assertEquals(2, refused.code(), refused.err());
        assertTrue(refused.err().contains("exists") && refused.err().contains("--force"), refused.err());
        assertTrue(Files.isSymbolicLink(out), "the link is kept");
        assertEquals(target, Files.readSymbolicLink(out));

        MixtuneCliTest.Result forced = export(inputs, out, "--type", "q8_0", "--force");
        assertEquals(0, forced.code(), forced.err());
        assertEquals(entry.path("file_sha256").asText(), sha256(Files.readAllBytes(out)));
    }

    /**
     * The README's other refusals, exit 2 with nothing written: a reward model's adapter (a score head in
     * modules_to_save), and a model without tokenizer.model whose tokenizer.json is SentencePiece-style (byte_fallback;
     * the converter's LlamaHfVocab path).
     */
    @Test
    void aRewardAdapterAndAModelWithoutTokenizerModelAreRefused(@TempDir Path dir) throws Exception {
        JsonNode entry = golden("tiny-mistral-adapter-q8_0");
        List<String> inputs = inputs(entry, dir);
        Path config = Path.of(inputs.get(3), "adapter_config.json");
        String causal = Files.readString(config);
        ObjectMapper json = new ObjectMapper();
        com.fasterxml.jackson.databind.node.ObjectNode reward =
                (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(causal);
        reward.putArray("modules_to_save").add("score");
        Files.writeString(config, json.writeValueAsString(reward));
        Path out = dir.resolve("out").resolve("model.gguf");
        Map<String, byte[]> before = MixtuneCliTest.snapshot(dir);

        MixtuneCliTest.Result rewardRefused = export(inputs, out);
        assertEquals(2, rewardRefused.code(), rewardRefused.err());
        assertTrue(rewardRefused.err().contains("reward model"), rewardRefused.err());
        MixtuneCliTest.assertSameFiles(before, MixtuneCliTest.snapshot(dir));

        Files.writeString(config, causal);
        Files.delete(Path.of(inputs.get(1), "tokenizer.model"));
        before = MixtuneCliTest.snapshot(dir);
        MixtuneCliTest.Result noTokenizer = export(inputs, out);
        assertEquals(2, noTokenizer.code(), noTokenizer.err());
        assertTrue(noTokenizer.err().contains("no tokenizer.model"), noTokenizer.err());
        MixtuneCliTest.assertSameFiles(before, MixtuneCliTest.snapshot(dir));
        assertFalse(Files.exists(out.getParent()), "nothing written, not even --out's folder");
    }

    /**
     * tiny-mixtral in transformers 5's fused layout, which mixtune loads (MistralCheckpoint): mlp.gate.weight and
     * per layer mlp.experts.gate_up_proj [experts, 2 x inter, hidden] (each expert's gate rows, then its up rows) and
     * mlp.experts.down_proj [experts, hidden, inter], no ".weight" on the fused two. It exports to the tensors the
     * per-expert layout gives: each of the golden's names, types, shapes and bytes.
     */
    @Test
    void aFusedExpertsMixtralExportsTheSameTensorsAsThePerExpertLayout(@TempDir Path dir) throws Exception {
        JsonNode entry = golden("tiny-mixtral-bf16-f16");
        Path hub = Path.of(inputs(entry, dir).get(1));
        Path fused = Files.createDirectories(dir.resolve("fused").resolve(hub.getFileName()));
        try (Stream<Path> files = Files.list(hub)) {
            for (Path file : files.filter(f -> !f.getFileName().toString().contains(".safetensors")).toList()) {
                Files.copy(file, fused.resolve(file.getFileName()));
            }
        }
        io.mixtune.model.config.ModelConfig config =
                io.mixtune.model.config.ModelConfig.read(hub.resolve("config.json"));
        int experts = config.numLocalExperts();
        int inter = config.intermediateSize();
        int hidden = config.hiddenSize();
        List<io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec> specs = new ArrayList<>();
        Map<String, float[]> data = new java.util.HashMap<>();
        try (SafetensorsReader reader = SafetensorsReader.open(hub)) {
            for (String name : reader.names()) {
                if (name.contains(".block_sparse_moe.experts.")) {
                    continue;
                }
                String renamed = name.replace(".block_sparse_moe.gate.", ".mlp.gate.");
                specs.add(new io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec(renamed, DType.BF16,
                        reader.info(name).shape()));
                data.put(renamed, reader.readFloats(name));
            }
            for (int layer = 0; layer < config.numHiddenLayers(); layer++) {
                String moe = "model.layers." + layer + ".block_sparse_moe.experts.";
                float[] gateUp = new float[experts * 2 * inter * hidden];
                float[] down = new float[experts * hidden * inter];
                for (int e = 0; e < experts; e++) {
                    System.arraycopy(reader.readFloats(moe + e + ".w1.weight"), 0, gateUp, 2 * e * inter * hidden,
                            inter * hidden);
                    System.arraycopy(reader.readFloats(moe + e + ".w3.weight"), 0, gateUp,
                            (2 * e + 1) * inter * hidden, inter * hidden);
                    System.arraycopy(reader.readFloats(moe + e + ".w2.weight"), 0, down, e * hidden * inter,
                            hidden * inter);
                }
                String p = "model.layers." + layer + ".mlp.experts.";
                specs.add(new io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec(p + "gate_up_proj",
                        DType.BF16, new long[] {experts, 2L * inter, hidden}));
                data.put(p + "gate_up_proj", gateUp);
                specs.add(new io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec(p + "down_proj",
                        DType.BF16, new long[] {experts, hidden, inter}));
                data.put(p + "down_proj", down);
            }
        }
        io.mixtune.model.safetensors.SafetensorsWriter.writeCheckpoint(fused, specs, Long.MAX_VALUE,
                spec -> data.get(spec.name()));

        Path out = dir.resolve("fused.gguf");
        MixtuneCliTest.Result result = export(List.of("--model", fused.toString()), out, "--type", "f16");
        assertEquals(0, result.code(), result.err());
        GgufReader reader = GgufReader.open(out);
        List<String> expectedNames = new ArrayList<>();
        for (JsonNode expected : entry.path("tensors")) {
            String name = expected.path("name").asText();
            expectedNames.add(name);
            GgufReader.TensorInfo info = reader.tensors().get(name);
            assertTrue(info != null, name + " is written");
            long[] shape = new ObjectMapper().convertValue(expected.path("shape"), long[].class);
            assertArrayEquals(shape, info.dimensions(), name);
            assertEquals(expected.path("type").asText(), info.type().name(), name);
            assertEquals(expected.path("sha256").asText(), sha256(reader.bytes(name)), name);
        }
        assertEquals(expectedNames.stream().sorted().toList(), reader.tensors().keySet().stream().sorted().toList());
    }

    /** An array's elements as GGUF encodes them: strings as uint64 length + UTF-8, numbers little-endian. */
    private static byte[] encoded(GgufReader.Value value) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        for (Object element : (List<?>) value.value()) {
            ByteBuffer buffer;
            if (element instanceof String text) {
                byte[] utf8 = text.getBytes(StandardCharsets.UTF_8);
                buffer = ByteBuffer.allocate(8 + utf8.length).order(ByteOrder.LITTLE_ENDIAN).putLong(utf8.length)
                        .put(utf8);
            } else if (value.type().equals("ARRAY[FLOAT32]")) {
                buffer = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putFloat((float) (double) element);
            } else {
                buffer = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt((int) (long) (Long) element);
            }
            bytes.writeBytes(buffer.array());
        }
        return bytes.toByteArray();
    }

    private static String sha256(byte[] bytes) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
    }
}
