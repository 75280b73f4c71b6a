package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * {@code mixtune merge-moe} against transformers and mergekit-moe's formulas ({@code interop/make_moe_goldens.py}): the
 * router rows of the hidden and cheap_embed gate modes, the Mixtral's tensors taken from the right models, a
 * {@code model+lora} expert folded as PEFT folds it; and the invariant that a mixture of one model's copies computes
 * that model whatever its router does.
 */
class MoeMergeTest {
    static final Path GOLDEN = Path.of("src/test/resources/moe").toAbsolutePath();
    private static final ObjectMapper JSON = new ObjectMapper();

    static Stream<Arguments> cases() throws IOException {
        return MergeGoldenTest.namedCases(GOLDEN.resolve("cases.json"));
    }

    /** The case as mergekit-moe's YAML, its models by absolute path. */
    private static String yaml(JsonNode spec) {
        StringBuilder text = new StringBuilder("base_model: " + GOLDEN.resolve("base") + "\ngate_mode: "
                + spec.get("gate_mode").asText() + "\nexperts:\n");
        for (JsonNode expert : spec.get("experts")) {
            text.append("  - source_model: ").append(GOLDEN.resolve(expert.get("source_model").asText())).append('\n');
            for (String side : List.of("positive_prompts", "negative_prompts")) {
                if (expert.has(side)) {
                    text.append("    ").append(side).append(":\n");
                    expert.get(side).forEach(p -> text.append("      - \"").append(p.asText()).append("\"\n"));
                }
            }
        }
        return text.toString();
    }

    private static MoeMerge.Report merge(String yaml, Path dir, boolean allowAllSame) throws IOException {
        Path file = dir.resolve("moe.yml");
        Files.writeString(file, yaml);
        return MoeMerge.run(MoeYaml.read(file), yaml, dir.resolve("out"),
                new MoeMerge.Options(false, 7, allowAllSame, Device.cpu(), RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void routerRowsEqualTransformers(String name, JsonNode spec, @TempDir Path dir) throws IOException {
        merge(yaml(spec), dir, false);
        try (SafetensorsReader expected = SafetensorsReader.open(GOLDEN.resolve("expected.safetensors"));
                SafetensorsReader out = SafetensorsReader.open(dir.resolve("out"))) {
            for (int layer = 0; layer < 2; layer++) {
                float[] want = expected.readFloats(name + ".gate." + layer);
                float[] got = out.readFloats("model.layers." + layer + ".block_sparse_moe.gate.weight");
                // hidden: float32 forward passes of another library on a padded batch: measured 2.7e-7
                assertArrayEquals(want, got, 2e-6f, name + " layer " + layer);
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void promptsTokenizeAsMergekitDoes(String name, JsonNode spec) {
        ModelConfig config = ModelConfig.read(GOLDEN.resolve("base/config.json"));
        try (TextTokenizer tokenizer = TextTokenizer.open(GOLDEN.resolve("base"), config.bosTokenId(),
                config.eosTokenId())) {
            var tokens = MoeGates.promptTokens(tokenizer, config.bosTokenId());
            spec.get("prompt_ids").properties().forEach(entry -> {
                long[] want = new long[entry.getValue().size()];
                for (int i = 0; i < want.length; i++) {
                    want[i] = entry.getValue().get(i).asLong();
                }
                assertArrayEquals(want, tokens.apply(entry.getKey()), entry.getKey());
            });
        }
    }

    @Test
    void expertsAreTheirModelsMlpsAndTheRestIsTheBase(@TempDir Path dir) throws IOException {
        JsonNode spec = JSON.readTree(GOLDEN.resolve("cases.json").toFile()).get(1);
        String yaml = yaml(spec) + "dtype: float32\nexperts_per_token: 1\n";
        MoeMerge.Report report = merge(yaml.replace("  - source_model: " + GOLDEN.resolve("expert2"),
                "  - source_model: " + GOLDEN.resolve("expert2") + "\n    residual_scale: 0.5"), dir, false);
        Path out = dir.resolve("out");
        assertEquals(2, report.experts());
        JsonNode config = JSON.readTree(out.resolve("config.json").toFile());
        assertEquals("MixtralForCausalLM", config.get("architectures").get(0).asText());
        assertEquals("mixtral", config.get("model_type").asText());
        assertEquals(2, config.get("num_local_experts").asInt());
        assertEquals(1, config.get("num_experts_per_tok").asInt());
        assertTrue(config.get("sliding_window").isNull());
        for (String file : List.of("tokenizer.json", "tokenizer_config.json", MoeYaml.WRITTEN_FILE)) {
            assertTrue(Files.isRegularFile(out.resolve(file)), file);
        }
        assertTrue(Files.readString(out.resolve("tokenizer_config.json")).contains("chat_template"));
        try (SafetensorsReader base = SafetensorsReader.open(GOLDEN.resolve("base"));
                SafetensorsReader e1 = SafetensorsReader.open(GOLDEN.resolve("expert1"));
                SafetensorsReader e2 = SafetensorsReader.open(GOLDEN.resolve("expert2"));
                SafetensorsReader mix = SafetensorsReader.open(out)) {
            for (int l = 0; l < 2; l++) {
                String src = "model.layers." + l + ".mlp.";
                String dst = "model.layers." + l + ".block_sparse_moe.experts.";
                assertArrayEquals(e1.readFloats(src + "gate_proj.weight"), mix.readFloats(dst + "0.w1.weight"));
                assertArrayEquals(e1.readFloats(src + "down_proj.weight"), mix.readFloats(dst + "0.w2.weight"));
                assertArrayEquals(e1.readFloats(src + "up_proj.weight"), mix.readFloats(dst + "0.w3.weight"));
                assertArrayEquals(e2.readFloats(src + "up_proj.weight"), mix.readFloats(dst + "1.w3.weight"));
                float[] down = e2.readFloats(src + "down_proj.weight");
                float[] scaled = mix.readFloats(dst + "1.w2.weight");
                for (int i = 0; i < down.length; i++) {
                    assertEquals(down[i] * 0.5f, scaled[i], 0f, "residual_scale scales w2");
                }
                String attention = "model.layers." + l + ".self_attn.q_proj.weight";
                assertArrayEquals(base.readFloats(attention), mix.readFloats(attention));
            }
            assertArrayEquals(base.readFloats("lm_head.weight"), mix.readFloats("lm_head.weight"));
            assertFalse(mix.contains("model.layers.0.mlp.gate_proj.weight"));
        }
    }

    @Test
    void modelPlusLoraIsFoldedAsPeftFoldsIt(@TempDir Path dir) throws IOException {
        String yaml = "base_model: " + GOLDEN.resolve("base") + "\ngate_mode: random\nexperts:\n"
                + "  - source_model: " + GOLDEN.resolve("expert1") + "+" + GOLDEN.resolve("lora") + "\n"
                + "  - source_model: " + GOLDEN.resolve("expert2") + "\n";
        merge(yaml, dir, false);
        try (SafetensorsReader expected = SafetensorsReader.open(GOLDEN.resolve("expected.safetensors"));
                SafetensorsReader mix = SafetensorsReader.open(dir.resolve("out"))) {
            for (int l = 0; l < 2; l++) {
                String src = "expert1+lora.model.layers." + l + ".mlp.";
                String dst = "model.layers." + l + ".block_sparse_moe.experts.0.";
                assertArrayEquals(expected.readFloats(src + "gate_proj.weight"), mix.readFloats(dst + "w1.weight"),
                        1e-6f);
                assertArrayEquals(expected.readFloats(src + "down_proj.weight"), mix.readFloats(dst + "w2.weight"),
                        1e-6f);
                assertArrayEquals(expected.readFloats(src + "up_proj.weight"), mix.readFloats(dst + "w3.weight"),
                        1e-6f);
            }
        }
    }

    /** A BASE+ADAPTER base runs hidden with the adapter folded in, as the folded checkpoint itself would. */
    @Test
    void anAdaptedBaseRoutesAsItsFoldedCheckpoint(@TempDir Path dir) throws IOException {
        // expert1 with the base's tokenizer, which the prompt modes need
        Path model = Files.createDirectories(dir.resolve("expert1"));
        for (Path file : List.of(GOLDEN.resolve("expert1/config.json"), GOLDEN.resolve("expert1/model.safetensors"),
                GOLDEN.resolve("base/tokenizer.json"), GOLDEN.resolve("base/tokenizer_config.json"))) {
            Files.copy(file, model.resolve(file.getFileName()));
        }
        Path folded = dir.resolve("folded");
        io.mixtune.lora.adapter.AdapterMerge.merge(model, GOLDEN.resolve("lora"), folded, null,
                RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES);
        String experts = "experts:\n  - source_model: " + GOLDEN.resolve("expert1") + "\n    positive_prompts: [\"doctor"
                + " heals\"]\n  - source_model: " + GOLDEN.resolve("expert2") + "\n    positive_prompts: [\"write"
                + " python\"]\n";
        Path viaAdapter = Files.createDirectories(dir.resolve("adapter"));
        merge("base_model: " + model + "+" + GOLDEN.resolve("lora") + "\n" + experts, viaAdapter, false);
        Path viaFolded = Files.createDirectories(dir.resolve("plain"));
        merge("base_model: " + folded + "\n" + experts, viaFolded, false);
        try (SafetensorsReader a = SafetensorsReader.open(viaAdapter.resolve("out"));
                SafetensorsReader b = SafetensorsReader.open(viaFolded.resolve("out"))) {
            for (int l = 0; l < 2; l++) {
                String router = "model.layers." + l + ".block_sparse_moe.gate.weight";
                assertArrayEquals(b.readFloats(router), a.readFloats(router), 1e-6f);
            }
            assertArrayEquals(b.readFloats("model.layers.0.self_attn.q_proj.weight"),
                    a.readFloats("model.layers.0.self_attn.q_proj.weight"));
        }
        try (Stream<Path> left = Files.list(viaAdapter)) {
            assertEquals(List.of("moe.yml", "out"), left.map(p -> p.getFileName().toString()).sorted().toList(),
                    "the folded base is deleted");
        }
    }

    /**
     * Every expert the same model: top-k routing weights are renormalised to sum to 1, so each token's MoE output is
     * that model's MLP output whatever the router chose, and the Mixtral's logits are the Mistral's.
     */
    @ParameterizedTest
    @MethodSource("gateModes")
    void copiesOfOneModelComputeThatModel(String gateMode, @TempDir Path dir) throws IOException {
        StringBuilder yaml = new StringBuilder("base_model: " + GOLDEN.resolve("base") + "\ngate_mode: " + gateMode
                + "\nexperts_per_token: 2\nexperts:\n");
        String[] prompts = {"doctor heals", "write python", "brave knight", "hello who"};
        for (String prompt : prompts) {
            yaml.append("  - source_model: ").append(GOLDEN.resolve("base")).append("\n    positive_prompts: [\"")
                    .append(prompt).append("\"]\n");
        }
        merge(yaml.toString(), dir, true);
        long[] ids = {1, 3, 6, 21, 5, 14, 9, 8, 10, 12, 13, 4, 7, 26, 15};
        try (NDManager manager = NDManager.newBaseManager(Device.cpu());
                CausalLm dense = MistralCheckpoint.load(GOLDEN.resolve("base"), manager);
                CausalLm mixture = MistralCheckpoint.load(dir.resolve("out"), manager)) {
            assertTrue(mixture.config().isMixtureOfExperts());
            float[] want = logits(dense, manager, ids);
            float[] got = logits(mixture, manager, ids);
            assertArrayEquals(want, got, 1e-5f);
        }
    }

    static Stream<String> gateModes() {
        return Stream.of("hidden", "cheap_embed", "random", "uniform_random");
    }

    private static float[] logits(CausalLm lm, NDManager manager, long[] ids) {
        NDArray input = manager.create(ids, new Shape(1, ids.length));
        NDArray positions = manager.arange(0, ids.length, 1, DataType.INT64).reshape(1, ids.length);
        return lm.forward(input, positions, null).toFloatArray();
    }

    @Test
    void nearlyIdenticalPromptsAreReportedAsDegenerateRouting(@TempDir Path dir) throws IOException {
        String words = "doctor heals fever the patient dose ".repeat(3);
        String yaml = "base_model: " + GOLDEN.resolve("base") + "\ngate_mode: cheap_embed\nexperts:\n"
                + "  - source_model: " + GOLDEN.resolve("expert1") + "\n    positive_prompts: [\"" + words + "\"]\n"
                + "  - source_model: " + GOLDEN.resolve("expert2") + "\n    positive_prompts: [\"" + words + "loop\"]\n";
        List<String> lines = merge(yaml, dir, false).lines();
        assertTrue(lines.stream().anyMatch(l -> l.startsWith("note: every layer has degenerate routing")), lines.toString());
        Path apart = dir.resolve("apart");
        Files.createDirectories(apart);
        JsonNode spec = JSON.readTree(GOLDEN.resolve("cases.json").toFile()).get(1);
        assertTrue(merge(yaml(spec), apart, false).lines().stream().noneMatch(l -> l.contains("degenerate")));
    }

    @Test
    void randomGatesFollowTheSeedAndTheirDistribution(@TempDir Path dir) {
        MoeGates.Rows a = MoeGates.random(2, 4, 256, 7, false);
        MoeGates.Rows b = MoeGates.random(2, 4, 256, 7, false);
        assertArrayEquals(a.perLayer()[1], b.perLayer()[1]);
        assertNotEquals(MoeGates.random(2, 4, 256, 8, false).perLayer()[0][0], a.perLayer()[0][0]);
        double sum = 0;
        double squares = 0;
        for (float x : a.perLayer()[0]) {
            sum += x;
            squares += x * x;
        }
        int n = a.perLayer()[0].length;
        assertEquals(0, sum / n, 0.1);
        assertEquals(1, squares / n, 0.15);
        double bound = 1 / Math.sqrt(256);
        for (float x : MoeGates.random(2, 4, 256, 7, true).perLayer()[1]) {
            assertTrue(Math.abs(x) <= bound, "uniform_random lies in +-1/sqrt(hidden)");
        }
    }

    @Test
    void noiseScaleAddsSeededNoise(@TempDir Path dir) throws IOException {
        String yaml = "base_model: " + GOLDEN.resolve("base") + "\ngate_mode: random\nexperts:\n"
                + "  - source_model: " + GOLDEN.resolve("expert1") + "\n    noise_scale: 0.01\n"
                + "  - source_model: " + GOLDEN.resolve("expert2") + "\n";
        merge(yaml, dir, false);
        Path again = dir.resolve("again");
        Files.createDirectories(again);
        merge(yaml, again, false);
        String name = "model.layers.1.block_sparse_moe.experts.0.w2.weight";
        try (SafetensorsReader e1 = SafetensorsReader.open(GOLDEN.resolve("expert1"));
                SafetensorsReader mix = SafetensorsReader.open(dir.resolve("out"));
                SafetensorsReader mix2 = SafetensorsReader.open(again.resolve("out"))) {
            float[] source = e1.readFloats("model.layers.1.mlp.down_proj.weight");
            float[] noisy = mix.readFloats(name);
            assertArrayEquals(noisy, mix2.readFloats(name), "the same seed, the same noise");
            double squares = 0;
            for (int i = 0; i < source.length; i++) {
                squares += (noisy[i] - source[i]) * (noisy[i] - source[i]);
            }
            assertEquals(0.01, Math.sqrt(squares / source.length), 0.003);
        }
    }

    /**
     * mergekit writes MixtralConfig(**base_config.to_dict()): every value the base resolves, defaults included. A base
     * config.json that leaves rms_norm_eps and rope_theta to MistralConfig's defaults (1e-6, 10000) must not have them
     * read back with MixtralConfig's (1e-5, 1e6).
     */
    @Test
    void keysTheBaseLeavesToMistralDefaultsKeepTheirMistralValues(@TempDir Path dir) throws IOException {
        Path base = Files.createDirectories(dir.resolve("base"));
        for (String file : List.of("model.safetensors", "tokenizer.json", "tokenizer_config.json")) {
            Files.copy(GOLDEN.resolve("base").resolve(file), base.resolve(file));
        }
        com.fasterxml.jackson.databind.node.ObjectNode json =
                (com.fasterxml.jackson.databind.node.ObjectNode) JSON.readTree(GOLDEN.resolve("base/config.json").toFile());
        json.remove(List.of("rms_norm_eps", "rope_parameters", "rope_theta"));
        JSON.writeValue(base.resolve("config.json").toFile(), json);
        ModelConfig dense = ModelConfig.read(base.resolve("config.json"));
        String yaml = "base_model: " + base + "\ngate_mode: random\nexperts:\n"
                + "  - source_model: " + GOLDEN.resolve("expert1") + "\n"
                + "  - source_model: " + GOLDEN.resolve("expert2") + "\n";
        merge(yaml, dir, false);
        ModelConfig mixture = ModelConfig.read(dir.resolve("out/config.json"));
        assertEquals(1e-6, dense.rmsNormEps());
        assertEquals(dense.rmsNormEps(), mixture.rmsNormEps(), "rms_norm_eps");
        assertEquals(dense.ropeTheta(), mixture.ropeTheta(), "rope_theta");
    }
}
