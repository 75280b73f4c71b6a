package io.mixtune.lora.adapter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.function.Consumer;
import java.util.function.Predicate;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** adapter_config.json as PEFT 0.21 reads it: pattern order, module selection, initialisers, and what mixtune writes. */
class PeftConfigTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String Q0 = "model.layers.0.self_attn.q_proj";
    private static final String Q1 = "model.layers.1.self_attn.q_proj";

    @Test
    void patternsKeepTheOrderTheyWereGivenInAndTheFirstMatchWins() throws Exception {
        Map<String, Double> alphas = new LinkedHashMap<>();
        alphas.put("model\\.layers\\.0\\.self_attn\\.q_proj", 2.0);
        alphas.put("q_proj", 32.0);
        for (int i = 0; i < 30; i++) {
            alphas.put("unused_" + i, (double) i);
        }
        LoraConfig config = new LoraConfig(4, 8, 0, List.of("q_proj"), false, Map.of(), alphas);
        assertEquals(List.copyOf(alphas.keySet()), List.copyOf(config.alphaPattern().keySet()));
        assertEquals(2.0, config.alphaOf(Q0), "the first key that matches, as PEFT's get_pattern_key");
        assertEquals(32.0, config.alphaOf(Q1));
        assertThrows(UnsupportedOperationException.class, () -> config.alphaPattern().put("x", 1.0));

        JsonNode written = PeftAdapter.configJson(config, List.of("q_proj"), List.of(), "m", List.of(Q0, Q1));
        List<String> order = new ArrayList<>();
        written.get("alpha_pattern").fieldNames().forEachRemaining(order::add);
        assertEquals(List.copyOf(alphas.keySet()), order, "written in the same order");
    }

    @Test
    void readingKeepsTheFilesPatternOrder(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("adapter_config.json");
        StringBuilder ranks = new StringBuilder();
        List<String> keys = new ArrayList<>();
        for (int i = 0; i < 30; i++) {
            keys.add("layers\\." + i + "\\.self_attn\\.q_proj");
            ranks.append(i == 0 ? "" : ", ").append('"').append(keys.get(i).replace("\\", "\\\\")).append("\": ")
                    .append(i + 1);
        }
        Files.writeString(file, "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"],"
                + " \"rank_pattern\": {" + ranks + "}, \"alpha_pattern\": {\"" + "model\\\\.layers\\\\.0\\\\.self_attn"
                + "\\\\.q_proj\": 2, \"q_proj\": 32}}");
        LoraConfig config = PeftAdapter.readConfig(file);
        assertEquals(keys, List.copyOf(config.rankPattern().keySet()));
        assertEquals(2.0, config.alphaOf(Q0));
        assertEquals(32.0, config.alphaOf(Q1));
    }

    @Test
    void aRegexTargetModulesMatchesWholeModuleNamesAsPeftsFullmatch(@TempDir Path dir) throws Exception {
        LoraConfig attention = readWith(dir, "\"model\\\\.layers\\\\.\\\\d+\\\\.self_attn\\\\.q_proj\"");
        assertTrue(attention.targets(Q0) && attention.targets(Q1));
        assertFalse(attention.targets("model.layers.0.self_attn.k_proj"));
        assertFalse(attention.targets("base.model.layers.0.self_attn.q_proj"), "the whole name must match");
        LoraConfig qv = readWith(dir, "\".*\\\\.(q_proj|v_proj)\"");
        assertTrue(qv.targets(Q0) && qv.targets("model.layers.1.self_attn.v_proj"));
        assertFalse(qv.targets("model.layers.1.self_attn.o_proj"));
        assertTrue(readWith(dir, "\"ALL-LINEAR\"").targets("model.layers.1.mlp.down_proj"), "all-linear in any case");
        IllegalArgumentException broken = assertThrows(IllegalArgumentException.class, () -> readWith(dir, "\"(q_proj\""));
        assertTrue(broken.getMessage().contains("target_modules \"(q_proj\" is not a valid regular expression"),
                broken.getMessage());
    }

    @Test
    void aRegexAdapterLoadsOnTheModulesItMatches(@TempDir Path dir) throws Exception {
        Path modelDir = dir.resolve("model");
        RandomCheckpoint.write(LoraAdapterTest.mistral(), modelDir, 1, DType.F32, Long.MAX_VALUE, 0.3);
        Path listed = dir.resolve("listed");
        float[] expected = saveRandomAdapter(modelDir, listed, List.of("q_proj", "v_proj"));
        Path regex = copyWithConfig(listed, dir.resolve("regex"), c -> c.put("target_modules", ".*\\.(q_proj|v_proj)"));
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(modelDir, manager)) {
            LoraModel lora = new LoraModel(model);
            PeftAdapter.load(lora, regex, "default");
            assertEquals(new TreeSet<>(List.of(Q0, Q1, "model.layers.0.self_attn.v_proj",
                    "model.layers.1.self_attn.v_proj")), new TreeSet<>(lora.layers().keySet()));
            LoraAdapterTest.assertArrayClose(expected, logits(model, manager), 0, "as the listed targets");
        }
        Path none = copyWithConfig(listed, dir.resolve("none"), c -> c.put("target_modules", "model\\.layers\\.\\d+\\.q_proj"));
        IllegalArgumentException nothing = loadFails(modelDir, none);
        assertTrue(nothing.getMessage().contains("the weights of 4 modules that target_modules "
                + "\"model\\.layers\\.\\d+\\.q_proj\" does not select, which PEFT would drop unused: "
                + "model.layers.0.self_attn.q_proj"), nothing.getMessage());
    }

    @Test
    void weightsTheConfigDoesNotSelectAreRefusedByName(@TempDir Path dir) throws Exception {
        Path modelDir = dir.resolve("model");
        RandomCheckpoint.write(LoraAdapterTest.mistral(), modelDir, 1, DType.F32, Long.MAX_VALUE, 0.3);
        Path listed = dir.resolve("listed");
        saveRandomAdapter(modelDir, listed, List.of("q_proj", "v_proj"));
        Path onlyQ = copyWithConfig(listed, dir.resolve("only-q"), c -> c.putArray("target_modules").add("q_proj"));
        IllegalArgumentException unused = loadFails(modelDir, onlyQ);
        assertTrue(unused.getMessage().contains("the weights of 2 modules that target_modules [q_proj] does not select, "
                + "which PEFT would drop unused: model.layers.0.self_attn.v_proj; model.layers.1.self_attn.v_proj"),
                unused.getMessage());
    }

    @Test
    void layersToTransformAndExcludeModulesSelectAsPeftDoes(@TempDir Path dir) throws Exception {
        Path modelDir = dir.resolve("model");
        RandomCheckpoint.write(LoraAdapterTest.mistral(), modelDir, 1, DType.F32, Long.MAX_VALUE, 0.3);
        Path full = dir.resolve("full");
        saveRandomAdapter(modelDir, full, List.of("q_proj", "v_proj"));
        Path layer0 = keepOnly(full, dir.resolve("layer0"), name -> name.contains(".layers.0."),
                c -> c.putArray("layers_to_transform").add(0));
        Path excluded = keepOnly(full, dir.resolve("excluded"), name -> !name.contains(".layers.1.self_attn.v_proj"),
                c -> c.putArray("exclude_modules").add("model.layers.1.self_attn.v_proj"));
        Path patterned = keepOnly(full, dir.resolve("patterned"), name -> name.contains(".layers.1."), c -> {
            c.put("layers_to_transform", 1);
            c.put("layers_pattern", "layers");
        });
        assertEquals(new TreeSet<>(List.of(Q0, "model.layers.0.self_attn.v_proj")), loadedModules(modelDir, layer0));
        assertEquals(new TreeSet<>(List.of(Q0, Q1, "model.layers.0.self_attn.v_proj")), loadedModules(modelDir, excluded));
        assertEquals(new TreeSet<>(List.of(Q1, "model.layers.1.self_attn.v_proj")), loadedModules(modelDir, patterned));

        // Saved again, the adapter names the modules that hold it: a reader needs no layers_to_transform.
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(modelDir, manager)) {
            LoraModel lora = new LoraModel(model);
            PeftAdapter.load(lora, layer0, "default");
            PeftAdapter.save(lora, "default", dir.resolve("again"), "m");
        }
        assertEquals("[\"model.layers.0.self_attn.q_proj\",\"model.layers.0.self_attn.v_proj\"]",
                JSON.readTree(dir.resolve("again/adapter_config.json").toFile()).get("target_modules").toString());
        assertEquals(new TreeSet<>(List.of(Q0, "model.layers.0.self_attn.v_proj")),
                loadedModules(modelDir, dir.resolve("again")));
    }

    @Test
    void initialisersThatChangeTheBaseWeightsAreRefused(@TempDir Path dir) throws Exception {
        for (String init : List.of("pissa", "pissa_niter_4", "olora", "corda", "loftq", "lora_ga")) {
            Path file = dir.resolve("adapter_config.json");
            Files.writeString(file, "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": "
                    + "[\"q_proj\"], \"init_lora_weights\": \"" + init + "\"}");
            IllegalArgumentException refused = assertThrows(IllegalArgumentException.class,
                    () -> PeftAdapter.readConfig(file));
            assertTrue(refused.getMessage().contains("init_lora_weights is \"" + init + "\"")
                    && refused.getMessage().contains("path_initial_model_for_weight_conversion"), refused.getMessage());
        }
        for (String init : List.of("true", "false", "\"gaussian\"", "\"eva\"", "\"mica\"", "\"orthogonal\"")) {
            Path file = dir.resolve("adapter_config.json");
            Files.writeString(file, "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": "
                    + "[\"q_proj\"], \"init_lora_weights\": " + init + "}");
            assertEquals(4, PeftAdapter.readConfig(file).r(), init);
        }
    }

    /** rsLoRA folded into every alpha: each module's written alpha / rank is mixtune's alpha / sqrt(rank). */
    @Test
    void mixtralRsloraWithPatternsIsWrittenAsPlainLoraPerModule() {
        Map<String, Integer> ranks = new LinkedHashMap<>();
        ranks.put("q_proj", 16);
        ranks.put("k_proj", 9);
        Map<String, Double> alphas = new LinkedHashMap<>();
        alphas.put("v_proj", 2.0);
        alphas.put("k_proj", 3.0);
        LoraConfig config = new LoraConfig(4, 8, 0, List.of("q_proj", "k_proj", "v_proj", "w1", "w2", "w3"), true,
                ranks, alphas);
        List<String> modules = List.of(Q0, "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj",
                "model.layers.0.block_sparse_moe.experts.0.w1", "model.layers.0.block_sparse_moe.experts.0.w2",
                "model.layers.0.block_sparse_moe.experts.0.w3");
        ObjectNode written = PeftAdapter.configJson(config, List.of("q_proj"), List.of(), "m", modules);
        assertEquals(16.0, written.get("lora_alpha").asDouble(), "8 x sqrt(4)");
        assertFalse(written.get("use_rslora").asBoolean());
        assertEquals("{\"q_proj\":16,\"k_proj\":9}", written.get("rank_pattern").toString(), "no expert pattern: "
                + "PEFT's own gate_up_proj entry (2r, 2 alpha) keeps alpha / r");
        // v_proj 2 x sqrt(4), k_proj 3 x sqrt(9), q_proj 8 x sqrt(16)
        assertEquals("{\"v_proj\":4.0,\"k_proj\":9.0,\"q_proj\":32.0}", written.get("alpha_pattern").toString());
    }

    @Test
    void expertPatternsAreAlsoWrittenUnderTransformers5sFusedNames() {
        Map<String, Integer> ranks = new LinkedHashMap<>();
        ranks.put("w1", 8);
        ranks.put("w3", 8);
        Map<String, Double> alphas = new LinkedHashMap<>();
        alphas.put("w1", 16.0);
        alphas.put("w3", 16.0);
        alphas.put("w2", 32.0);
        LoraConfig config = new LoraConfig(4, 8, 0, List.of("w1", "w2", "w3"), false, ranks, alphas);
        ObjectNode written = PeftAdapter.configJson(config, List.of("w1", "w2", "w3"), List.of(), "m", experts(2, 2));
        assertEquals("{\"mlp\\\\.experts\\\\.gate_up_proj\":16,\"mlp\\\\.experts\\\\.down_proj\":4,\"w1\":8,\"w3\":8}",
                written.get("rank_pattern").toString(), "gate_up_proj: twice w1's rank; down_proj: w2's");
        assertEquals("{\"mlp\\\\.experts\\\\.gate_up_proj\":32.0,\"mlp\\\\.experts\\\\.down_proj\":32.0,\"w1\":16.0,"
                + "\"w3\":16.0,\"w2\":32.0}", written.get("alpha_pattern").toString());

        // rsLoRA too: w1 alpha 8 x sqrt(8) at rank 8, so gate_up_proj 2 x that at rank 16.
        LoraConfig rs = new LoraConfig(4, 8, 0, List.of("w1", "w2", "w3"), true, Map.of("w1", 8, "w3", 8), Map.of());
        ObjectNode rsWritten = PeftAdapter.configJson(rs, List.of("w1", "w2", "w3"), List.of(), "m", experts(1, 2));
        assertEquals(16, rsWritten.get("rank_pattern").get("mlp\\.experts\\.gate_up_proj").asInt());
        assertEquals(2 * 8 * Math.sqrt(8), rsWritten.get("alpha_pattern").get("mlp\\.experts\\.gate_up_proj").asDouble(),
                1e-12);
        assertEquals(8 * Math.sqrt(4), rsWritten.get("alpha_pattern").get("mlp\\.experts\\.down_proj").asDouble(), 1e-12);

        // Different per layer: one key per layer.
        LoraConfig perLayer = new LoraConfig(4, 8, 0, List.of("w1", "w2", "w3"), false,
                Map.of("layers\\.1\\..*\\.w[13]", 8), Map.of());
        ObjectNode perLayerWritten = PeftAdapter.configJson(perLayer, List.of("w1"), List.of(), "m", experts(2, 2));
        assertEquals(8, perLayerWritten.get("rank_pattern").get("model\\.layers\\.0\\.mlp\\.experts\\.gate_up_proj").asInt());
        assertEquals(16, perLayerWritten.get("rank_pattern").get("model\\.layers\\.1\\.mlp\\.experts\\.gate_up_proj").asInt());
    }

    @Test
    void expertPatternsThatPeftsFusedExpertsCannotHoldAreRefused() {
        for (Map<String, Double> alphas : List.of(Map.of("w1", 16.0), Map.of("experts\\.0\\.w2", 16.0))) {
            LoraConfig config = new LoraConfig(4, 8, 0, List.of("w1", "w2", "w3"), false, Map.of(), alphas);
            IllegalArgumentException refused = assertThrows(IllegalArgumentException.class,
                    () -> PeftAdapter.configJson(config, List.of("w1"), List.of(), "m", experts(1, 2)));
            assertTrue(refused.getMessage().contains("PEFT 0.21 on transformers 5 fuses a Mixtral layer's experts"),
                    refused.getMessage());
        }
    }

    private static List<String> experts(int layers, int experts) {
        List<String> names = new ArrayList<>();
        for (int layer = 0; layer < layers; layer++) {
            for (int e = 0; e < experts; e++) {
                for (String w : List.of("w1", "w2", "w3")) {
                    names.add("model.layers." + layer + ".block_sparse_moe.experts." + e + "." + w);
                }
            }
        }
        return names;
    }

    private static LoraConfig readWith(Path dir, String targetModules) throws Exception {
        Path file = dir.resolve("adapter_config.json");
        Files.writeString(file, "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": "
                + targetModules + "}");
        return PeftAdapter.readConfig(file);
    }

    /** Saves a random adapter on {@code targets} and returns the logits with it. */
    private static float[] saveRandomAdapter(Path modelDir, Path adapterDir, List<String> targets) {
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(modelDir, manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", LoraConfig.of(4, 8, targets), LoraModel.Init.RANDOM, 3);
            PeftAdapter.save(lora, "default", adapterDir, "m");
            return logits(model, manager);
        }
    }

    private static Path copyWithConfig(Path from, Path to, Consumer<ObjectNode> edit) throws Exception {
        Files.createDirectories(to);
        Files.copy(from.resolve(PeftAdapter.WEIGHTS_FILE), to.resolve(PeftAdapter.WEIGHTS_FILE));
        ObjectNode config = (ObjectNode) JSON.readTree(from.resolve(PeftAdapter.CONFIG_FILE).toFile());
        edit.accept(config);
        JSON.writeValue(to.resolve(PeftAdapter.CONFIG_FILE).toFile(), config);
        return to;
    }

    /** A copy holding only the tensors whose names {@code keep} accepts, as PEFT saves a narrower adapter. */
    private static Path keepOnly(Path from, Path to, Predicate<String> keep,
            Consumer<ObjectNode> edit) throws Exception {
        copyWithConfig(from, to, edit);
        List<TensorSpec> specs = new ArrayList<>();
        Map<String, float[]> data = new LinkedHashMap<>();
        try (SafetensorsReader reader =
                SafetensorsReader.open(from.resolve(PeftAdapter.WEIGHTS_FILE))) {
            for (String name : new TreeSet<>(reader.names())) {
                if (keep.test(name)) {
                    specs.add(new TensorSpec(name, DType.F32,
                            reader.info(name).shape()));
                    data.put(name, reader.readFloats(name));
                }
            }
        }
        Files.delete(to.resolve(PeftAdapter.WEIGHTS_FILE));
        SafetensorsWriter.writeFile(to.resolve(PeftAdapter.WEIGHTS_FILE), specs,
                spec -> data.get(spec.name()));
        return to;
    }

    private static TreeSet<String> loadedModules(Path modelDir, Path adapterDir) {
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(modelDir, manager)) {
            LoraModel lora = new LoraModel(model);
            PeftAdapter.load(lora, adapterDir, "default");
            return new TreeSet<>(lora.layers().keySet());
        }
    }

    private static IllegalArgumentException loadFails(Path modelDir, Path adapterDir) {
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(modelDir, manager)) {
            return assertThrows(IllegalArgumentException.class,
                    () -> PeftAdapter.load(new LoraModel(model), adapterDir, "default"));
        }
    }

    private static float[] logits(CausalLm model, NDManager manager) {
        return model.forward(manager.create(new long[][] {{1, 9, 33, 4, 58, 12}}),
                manager.arange(0, 6, 1, DataType.INT64).reshape(1, 6), null).toFloatArray();
    }
}
