package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.merging.gguf.GgufReader;
import io.mixtune.trainer.PresetCheckpoint;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * `mixtune export-lora-gguf` writes what llama.cpp's convert_lora_to_gguf.py writes, byte for byte
 * (golden/gguf/lora-converter.json, interop/make_gguf_lora_goldens.py): tiny-mistral with every linear layer targeted
 * (f32, f16, q8_0; q and k's lora_b rows permuted), tiny-mixtral (bf16) with attention, every expert, the router and
 * lm_head targeted (f32, q8_0; experts stacked), and PEFT's own adapter with a rank_pattern (f16); for rsLoRA with an
 * alpha_pattern (f32, q8_0), what the converter writes for the adapter with PEFT's scale over llama.cpp's alpha / rank
 * folded into lora_B. The base GGUF plus the adapter is the merged export; what llama.cpp cannot apply is refused.
 */
class ExportLoraGgufTest {
    private static final Path GOLDEN = Path.of("src/test/resources/golden/gguf/lora-converter.json");
    private static final Path PEFT_ADAPTER = Path.of("src/test/resources/golden/gguf/lora-peft-rank-pattern");

    private static JsonNode golden(String name) throws Exception {
        return ExportGgufTest.goldenCase(GOLDEN, name);
    }

    /** The case's base model and its adapter (in a folder named "adapter", as the script's), as --model and --adapter. */
    private static List<String> inputs(JsonNode entry, Path dir) throws Exception {
        String preset = entry.path("preset").asText();
        Path model = dir.resolve("base").resolve(preset);
        PresetCheckpoint.write(preset, model, entry.path("seed").asLong(),
                InitModelCommand.parseDtype(entry.path("dtype").asText()));
        Path adapter = dir.resolve("adapter");
        if (entry.path("adapter").isArray()) {
            List<String> init = new ArrayList<>(List.of("init-adapter", "--model", model.toString(), "--out",
                    adapter.toString()));
            entry.path("adapter").forEach(arg -> init.add(arg.asText()));
            MixtuneCliTest.Result made = MixtuneCliTest.run(init.toArray(String[]::new));
            assertEquals(0, made.code(), made.err());
        } else {
            Files.createDirectories(adapter);
            for (String file : List.of("adapter_config.json", "adapter_model.safetensors")) {
                Files.copy(PEFT_ADAPTER.resolve(file), adapter.resolve(file));
            }
        }
        if (entry.path("adapter_config").isObject()) {
            Path config = adapter.resolve("adapter_config.json");
            ObjectNode json = (ObjectNode) new ObjectMapper().readTree(config.toFile());
            json.setAll((ObjectNode) entry.path("adapter_config"));
            new ObjectMapper().writeValue(config.toFile(), json);
        }
        return List.of("--model", model.toString(), "--adapter", adapter.toString());
    }

    private static MixtuneCliTest.Result run(String command, List<String> inputs, Path out, String... extra) {
        List<String> args = new ArrayList<>(List.of(command));
        args.addAll(inputs);
        args.addAll(List.of("--out", out.toString()));
        args.addAll(List.of(extra));
        return MixtuneCliTest.run(args.toArray(String[]::new));
    }

    @ParameterizedTest
    @ValueSource(strings = {"tiny-mistral-all-linear-f32", "tiny-mistral-all-linear-f16",
            "tiny-mistral-all-linear-q8_0", "tiny-mixtral-experts-router-f32", "tiny-mixtral-experts-router-q8_0",
            "tiny-mistral-peft-rank-pattern-f16", "tiny-mistral-rslora-alpha-pattern-f32",
            "tiny-mistral-rslora-alpha-pattern-q8_0"})
    void writesWhatLlamaCppsLoraConverterWrites(String name, @TempDir Path dir) throws Exception {
        JsonNode entry = golden(name);
        Path out = dir.resolve(name + ".gguf");
        MixtuneCliTest.Result result = run("export-lora-gguf", inputs(entry, dir), out, "--type",
                entry.path("outtype").asText());
        assertEquals(0, result.code(), result.err());

        GgufReader reader = GgufReader.open(out);
        List<String> keys = new ArrayList<>();
        entry.path("metadata").forEach(key -> keys.add(key.path("key").asText()));
        assertEquals(keys, List.copyOf(reader.metadata().keySet()), "metadata keys in the converter's order");
        for (JsonNode expected : entry.path("metadata")) {
            GgufReader.Value actual = reader.metadata().get(expected.path("key").asText());
            assertEquals(expected.path("type").asText(), actual.type(), expected.toString());
            if (actual.value() instanceof Number number) {
                assertEquals(expected.path("value").asDouble(), number.doubleValue(), 0.0, expected.toString());
            } else {
                assertEquals(expected.path("value").asText(), actual.value(), expected.toString());
            }
        }
        List<String> tensors = new ArrayList<>();
        entry.path("tensors").forEach(tensor -> tensors.add(tensor.path("name").asText()));
        assertEquals(tensors, List.copyOf(reader.tensors().keySet()), "tensors in the converter's order");
        for (JsonNode expected : entry.path("tensors")) {
            GgufReader.TensorInfo info = reader.tensors().get(expected.path("name").asText());
            assertArrayEquals(new ObjectMapper().convertValue(expected.path("shape"), long[].class),
                    info.dimensions(), info.name());
            assertEquals(expected.path("type").asText(), info.type().name(), info.name());
            assertEquals(expected.path("sha256").asText(), sha256(reader.bytes(info.name())), info.name());
        }
        assertEquals(entry.path("file_sha256").asText(), sha256(Files.readAllBytes(out)), "the whole file");
    }

    /**
     * What llama.cpp computes with the adapter, W + (alpha / rank) lora_b lora_a per expert (llama-adapter.cpp's
     * scale), on the f32 export of the bare base, equals the f32 export with the adapter merged in, for every tensor
     * the adapter holds: Q/K permutation, stacked experts, router and output included.
     */
    @ParameterizedTest
    @ValueSource(strings = {"tiny-mistral-all-linear-f32", "tiny-mixtral-experts-router-f32",
            "tiny-mistral-rslora-alpha-pattern-f32"})
    void theBaseGgufWithTheAdapterIsTheMergedExport(String name, @TempDir Path dir) throws Exception {
        List<String> inputs = inputs(golden(name), dir);
        Path lora = dir.resolve("lora.gguf");
        Path base = dir.resolve("base.gguf");
        Path merged = dir.resolve("merged.gguf");
        assertEquals(0, run("export-lora-gguf", inputs, lora, "--type", "f32").code());
        assertEquals(0, run("export-gguf", inputs.subList(0, 2), base, "--type", "f32").code());
        assertEquals(0, run("export-gguf", inputs, merged, "--type", "f32").code());
        GgufReader adapter = GgufReader.open(lora);
        GgufReader bare = GgufReader.open(base);
        GgufReader folded = GgufReader.open(merged);
        double alpha = (Double) adapter.metadata().get("adapter.lora.alpha").value();
        int checked = 0;
        for (String tensor : adapter.tensors().keySet()) {
            if (!tensor.endsWith(".lora_a")) {
                continue;
            }
            String weight = tensor.substring(0, tensor.length() - ".lora_a".length());
            long[] aDims = adapter.tensors().get(tensor).dimensions(); // ggml order: [in, rank, experts]
            int in = (int) aDims[0];
            int rank = (int) aDims[1];
            int experts = aDims.length == 3 ? (int) aDims[2] : 1;
            float[] a = adapter.floats(tensor);
            float[] b = adapter.floats(weight + ".lora_b");
            int out = b.length / experts / rank;
            float[] w = bare.floats(weight);
            float[] expected = folded.floats(weight);
            double largest = 0;
            for (int e = 0; e < experts; e++) {
                for (int o = 0; o < out; o++) {
                    for (int i = 0; i < in; i++) {
                        double delta = 0;
                        for (int k = 0; k < rank; k++) {
                            delta += (double) b[(e * out + o) * rank + k] * a[(e * rank + k) * in + i];
                        }
                        int at = (e * out + o) * in + i;
                        double applied = w[at] + alpha / rank * delta;
                        largest = Math.max(largest, Math.abs(alpha / rank * delta));
                        assertEquals(expected[at], applied, 1e-6 + 1e-6 * Math.abs(expected[at]), weight + "[" + at
                                + "]");
                    }
                }
            }
            assertTrue(largest > 1e-4, weight + " is changed by the adapter: " + largest);
            checked++;
        }
        assertEquals(name.contains("mixtral") ? 2 * (4 + 3 + 1) + 1 : 2 * 7, checked);
    }

    @Test
    void whatLlamaCppCannotApplyIsRefusedNamingIt(@TempDir Path dir) throws Exception {
        JsonNode mistral = golden("tiny-mistral-all-linear-f32");
        Path model = Path.of(inputs(mistral, dir).get(1));
        Map<String, List<String>> adapters = Map.of(
                "use_dora is true", List.of("--r", "4", "--dora", "--targets", "q_proj"));
        for (Map.Entry<String, List<String>> refused : adapters.entrySet()) {
            Path adapter = dir.resolve(refused.getKey().replace(' ', '-'));
            List<String> init = new ArrayList<>(List.of("init-adapter", "--model", model.toString(), "--out",
                    adapter.toString()));
            init.addAll(refused.getValue());
            assertEquals(0, MixtuneCliTest.run(init.toArray(String[]::new)).code());
            Path out = dir.resolve("refused.gguf");
            MixtuneCliTest.Result result = run("export-lora-gguf", List.of("--model", model.toString(), "--adapter",
                    adapter.toString()), out);
            assertEquals(2, result.code(), result.err());
            assertTrue(result.err().contains(refused.getKey()), result.err());
            assertTrue(result.err().contains("export-gguf"), "says what to do instead: " + result.err());
            assertTrue(Files.notExists(out));
        }

        // PEFT drops weights its config does not select; llama.cpp would apply them
        Path unselected = dir.resolve("unselected");
        assertEquals(0, MixtuneCliTest.run("init-adapter", "--model", model.toString(), "--out", unselected.toString(),
                "--targets", "q_proj,v_proj").code());
        Path unselectedConfig = unselected.resolve("adapter_config.json");
        ObjectNode config = (ObjectNode) new ObjectMapper().readTree(unselectedConfig.toFile());
        config.putArray("target_modules").add("q_proj");
        new ObjectMapper().writeValue(unselectedConfig.toFile(), config);
        MixtuneCliTest.Result dropped = run("export-lora-gguf", List.of("--model", model.toString(), "--adapter",
                unselected.toString()), dir.resolve("unselected.gguf"));
        assertEquals(2, dropped.code(), dropped.err());
        assertTrue(dropped.err().contains("v_proj's weights, which the adapter's config does not select"),
                dropped.err());

        Path mixtral = dir.resolve("mixtral").resolve("tiny-mixtral");
        PresetCheckpoint.write("tiny-mixtral", mixtral, 0, InitModelCommand.parseDtype("bf16"));
        Path experts = dir.resolve("two-of-three-experts");
        assertEquals(0, MixtuneCliTest.run("init-adapter", "--model", mixtral.toString(), "--out", experts.toString(),
                "--targets", "w1,w2").code());
        MixtuneCliTest.Result partial = run("export-lora-gguf", List.of("--model", mixtral.toString(), "--adapter",
                experts.toString()), dir.resolve("experts.gguf"));
        assertEquals(2, partial.code(), partial.err());
        assertTrue(partial.err().contains("Unprocessed experts"), partial.err());

        for (String type : List.of("q4_0", "bf16", "q4_k_m")) {
            MixtuneCliTest.Result wrongType = run("export-lora-gguf", List.of("--model", model.toString(),
                    "--adapter", dir.resolve("adapter").toString()), dir.resolve("typed.gguf"), "--type", type);
            assertEquals(2, wrongType.code(), wrongType.err());
            assertTrue(wrongType.err().contains("expected f32, f16 or q8_0"), wrongType.err());
        }
    }

    /**
     * Only --model's config.json is read, so a wrong base is found by the adapter's shapes against it: llama.cpp
     * refuses such a file only when it loads it ("incorrect shape (hint: maybe wrong base model?)",
     * llama-adapter.cpp), and an lm_head adapter on a base with tied embeddings names an output.weight the base GGUF
     * does not have ("does not exist in base model").
     */
    @Test
    void anAdapterForAnotherBaseIsRefused(@TempDir Path dir) throws Exception {
        List<String> inputs = inputs(golden("tiny-mistral-all-linear-f32"), dir);
        Path model = Path.of(inputs.get(1));
        Path adapter = Path.of(inputs.get(3));
        ObjectMapper json = new ObjectMapper();
        ObjectNode config = (ObjectNode) json.readTree(model.resolve("config.json").toFile());
        Path wider = Files.createDirectories(dir.resolve("wider"));
        json.writeValue(wider.resolve("config.json").toFile(), config.deepCopy()
                .put("intermediate_size", config.path("intermediate_size").asInt() * 2));
        MixtuneCliTest.Result wrongBase = run("export-lora-gguf", List.of("--model", wider.toString(), "--adapter",
                adapter.toString()), dir.resolve("wider.gguf"));
        assertEquals(2, wrongBase.code(), wrongBase.err());
        assertTrue(wrongBase.err().contains("mlp.down_proj: lora_A " + "["), wrongBase.err());
        assertTrue(wrongBase.err().contains("wrong --model?"), wrongBase.err());
        assertTrue(Files.notExists(dir.resolve("wider.gguf")));

        Path head = dir.resolve("lm-head");
        assertEquals(0, MixtuneCliTest.run("init-adapter", "--model", model.toString(), "--out", head.toString(),
                "--targets", "q_proj,lm_head", "--init", "random").code());
        Path tied = Files.createDirectories(dir.resolve("tied"));
        json.writeValue(tied.resolve("config.json").toFile(), config.deepCopy().put("tie_word_embeddings", true));
        MixtuneCliTest.Result tiedHead = run("export-lora-gguf", List.of("--model", tied.toString(), "--adapter",
                head.toString()), dir.resolve("tied.gguf"));
        assertEquals(2, tiedHead.code(), tiedHead.err());
        assertTrue(tiedHead.err().contains("lm_head"), tiedHead.err());
        assertTrue(tiedHead.err().contains("tie_word_embeddings"), tiedHead.err());
    }

    @Test
    void anExistingOutIsReplacedOnlyWithForceAndAnOutInsideAnInputNever(@TempDir Path dir) throws Exception {
        List<String> inputs = inputs(golden("tiny-mistral-all-linear-q8_0"), dir);
        Path out = Files.writeString(dir.resolve("adapter.gguf"), "mine");
        Map<String, byte[]> before = MixtuneCliTest.snapshot(dir);

        MixtuneCliTest.Result refused = run("export-lora-gguf", inputs, out);
        assertEquals(2, refused.code(), refused.err());
        assertTrue(refused.err().contains("pass --force"), refused.err());
        for (String input : List.of(inputs.get(1), inputs.get(3))) {
            MixtuneCliTest.Result inside = run("export-lora-gguf", inputs, Path.of(input, "x.gguf"), "--force");
            assertEquals(2, inside.code(), inside.err());
        }
        assertEquals(MixtuneCliTest.snapshot(dir).keySet(), before.keySet(), "nothing written");
        assertArrayEquals("mine".getBytes(), Files.readAllBytes(out));

        assertEquals(0, run("export-lora-gguf", inputs, out, "--force").code());
        assertEquals("adapter", GgufReader.open(out).metadata().get("general.type").value());
    }

    private static String sha256(byte[] bytes) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
    }
}
