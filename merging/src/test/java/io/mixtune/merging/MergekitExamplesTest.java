package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * mergekit's own example configs (configs/mergekit/, copied from its repository) read as mergekit reads them: the
 * output directory from the command line, gradients interpolated over the layers, filtered values, the slices form.
 * Expected values are computed by hand from mergekit's rule: a gradient [v_0 .. v_{n-1}] at t is
 * (1 - f) v_i + f v_{i+1} with i + f = t (n - 1), and t = layer / (layers - 1).
 */
class MergekitExamplesTest {
    private static final Path EXAMPLES = Path.of("../configs/mergekit");
    private static final String ATTENTION = "model.layers.7.self_attn.q_proj.weight";
    private static final String MLP = "model.layers.7.mlp.up_proj.weight";

    @TempDir
    Path dir;

    private MergeConfig read(String example) {
        return MergeYaml.read(EXAMPLES.resolve(example), dir.resolve("merged"));
    }

    @Test
    void linearTakesTheOutputDirectoryFromTheCommandLine() {
        MergeConfig config = read("linear.yml");
        assertEquals(MergeMethod.LINEAR, config.method());
        assertEquals(dir.resolve("merged"), config.out());
        assertEquals(List.of(Path.of("psmathur/orca_mini_v3_13b"), Path.of("WizardLM/WizardLM-13B-V1.2"),
                Path.of("garage-bAInd/Platypus2-13B")), config.models().stream().map(MergeConfig.Model::model).toList());
        assertEquals(1.0, config.weightOf(0, MLP, 0.3));
        assertEquals(0.3, config.weightOf(1, MLP, 0.3));
        assertEquals(0.5, config.weightOf(2, MLP, 0.3));
        assertEquals(DType.F16, config.dtype());
        assertTrue(ModelMerge.coefficients(config, MLP, 0).length == 3 && !config.variesByTensor());
        assertArrayEquals(new double[] {1 / 1.8, 0.3 / 1.8, 0.5 / 1.8}, ModelMerge.coefficients(config, MLP, 0), 1e-15);
    }

    @Test
    void tiesInterpolatesGradientsAndPicksFilteredValues() {
        MergeConfig config = read("ties.yml");
        assertEquals(MergeMethod.TIES, config.method());
        assertEquals(Path.of("TheBloke/Llama-2-13B-fp16"), config.baseModel());
        assertTrue(config.normalize());
        assertTrue(config.parameters().int8Mask());
        assertTrue(config.variesByTensor());
        // density: [1, 0.7, 0.1] at t = 0, 0.25 (0.5 of the way from 1 to 0.7), 0.75 (0.5 from 0.7 to 0.1), 1
        assertEquals(1.0, config.densityOf(0, MLP, 0), 1e-15);
        assertEquals(0.85, config.densityOf(0, MLP, 0.25), 1e-15);
        assertEquals(0.4, config.densityOf(0, MLP, 0.75), 1e-15);
        assertEquals(0.1, config.densityOf(0, MLP, 1), 1e-15);
        assertEquals(1.0, config.weightOf(0, MLP, 0.5));
        // weight: [0, 0.3, 0.7, 1] at t = 0.5 is halfway from 0.3 to 0.7; at 1/6 halfway from 0 to 0.3
        assertEquals(0.5, config.densityOf(1, MLP, 0.5));
        assertEquals(0.5, config.weightOf(1, MLP, 0.5), 1e-15);
        assertEquals(0.15, config.weightOf(1, MLP, 1.0 / 6), 1e-15);
        // weight: 0.5 where the name holds "mlp", else 0
        assertEquals(0.5, config.weightOf(2, MLP, 0.5));
        assertEquals(0.0, config.weightOf(2, ATTENTION, 0.5));
        assertEquals(0.33, config.densityOf(2, ATTENTION, 0.9));
    }

    @Test
    void bioMergeIsTiesWithoutNormalising() {
        MergeConfig config = read("bio-merge.yml");
        assertEquals(MergeMethod.TIES, config.method());
        assertEquals(Path.of("mistralai/Mistral-7B-v0.1"), config.baseModel());
        assertEquals(false, config.normalize());
        assertEquals(0.5, config.weightOf(1, ATTENTION, 0));
        assertEquals(0.5, config.densityOf(0, ATTENTION, 1));
        assertTrue(!config.variesByTensor());
    }

    @Test
    void gradientSlerpsSlicesAreReadAsItsModelsForm() {
        MergeConfig config = read("gradient-slerp.yml");
        assertEquals(MergeMethod.SLERP, config.method());
        assertEquals(Path.of("psmathur/orca_mini_v3_13b"), config.baseModel());
        assertEquals(List.of(Path.of("psmathur/orca_mini_v3_13b"), Path.of("garage-bAInd/Platypus2-13B")),
                config.models().stream().map(MergeConfig.Model::model).toList());
        assertEquals(List.of(0, 40), config.layerRange());
        // layer 20 of 41 sits at t = 0.5: self_attn [0, 0.5, 0.3, 0.7, 1] -> 0.3, mlp [1, 0.5, 0.7, 0.3, 0] -> 0.7
        assertEquals(0.5, LayerwiseMerge.layerPosition("model.layers.20.mlp.up_proj.weight", 41));
        assertEquals(0.3, config.t("model.layers.20.self_attn.o_proj.weight", 0.5), 1e-15);
        assertEquals(0.7, config.t("model.layers.20.mlp.up_proj.weight", 0.5), 1e-15);
        // t = 0.375: 1.5 steps along, halfway from 0.5 to 0.3 for self_attn; the fallback elsewhere
        assertEquals(0.4, config.t("model.layers.15.self_attn.o_proj.weight", 0.375), 1e-15);
        assertEquals(0.5, config.t("model.norm.weight", 0), 1e-15);
        assertEquals(0.0, LayerwiseMerge.layerPosition("model.embed_tokens.weight", 41));
        assertEquals(0.0, LayerwiseMerge.layerPosition("lm_head.weight", 41));
        assertEquals(1.0, LayerwiseMerge.layerPosition("model.layers.40.mlp.up_proj.weight", 41));
    }

    @Test
    void theResolvedConfigReadsBackWithItsGradientsAndFilters() throws IOException {
        MergeConfig config = read("ties.yml");
        Path written = dir.resolve("resolved.yaml");
        MergeYaml.write(config, written);
        assertEquals(config, MergeYaml.read(written));
    }

    @Test
    void aPassthroughFrankenmergeKeepsItsSlices() throws IOException {
        MergeConfig config = read("orcamini-platy-44layer.yml");
        assertEquals(MergeMethod.PASSTHROUGH, config.method());
        assertEquals(List.of(Path.of("psmathur/orca_mini_v3_13b"), Path.of("garage-bAInd/Platypus2-13B")),
                config.models().stream().map(MergeConfig.Model::model).toList());
        assertEquals(2, config.slices().size());
        assertEquals(List.of(0, 24), config.slices().get(0).sources().get(0).layerRange());
        assertEquals(List.of(20, 40), config.slices().get(1).sources().get(0).layerRange());
        assertEquals(24 + 20, config.slices().stream().mapToInt(MergeConfig.Slice::length).sum());
        Path written = dir.resolve("resolved.yaml");
        MergeYaml.write(config, written);
        assertEquals(config, MergeYaml.read(written), "the resolved slices read back the same");
    }

    /**
     * A frankenmerge of two 3-layer models: a's layers [0, 2) then b's [1, 3), b's o_proj scaled by 0 where the filter
     * says; embeddings from the first slice's model, final norm and lm_head from the last's, as mergekit plans them.
     */
    @Test
    void passthroughStacksLayerRangesRenumberedInOrder() throws IOException {
        Path a = tinyModel("a", 1, 2);
        Path b = tinyModel("b", 3, 4);
        Path file = Files.writeString(dir.resolve("franken.yml"), """
                slices:
                  - sources:
                      - model: %s
                        layer_range: [0, 2]
                  - sources:
                      - model: %s
                        layer_range: [1, 3]
                        parameters:
                          scale:
                            - filter: q_proj
                              value: [0.5, 0]
                            - value: 1
                merge_method: passthrough
                """.formatted(a, b));
        Path out = dir.resolve("merged");
        ModelMerge.run(MergeYaml.read(file, out), false, Long.MAX_VALUE);
        try (SafetensorsReader merged = SafetensorsReader.open(out)) {
            assertEquals(java.util.Set.of("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                    "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight",
                    "model.layers.0.input_layernorm.weight",
                    "model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
                    "model.layers.2.self_attn.q_proj.weight", "model.layers.2.mlp.down_proj.weight",
                    "model.layers.3.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight",
                    "model.layers.3.input_layernorm.weight"), merged.names());
            assertArrayEquals(new float[] {1, 2}, merged.readFloats("model.embed_tokens.weight"));
            assertArrayEquals(new float[] {3, 4}, merged.readFloats("model.norm.weight"));
            assertArrayEquals(new float[] {3, 4}, merged.readFloats("lm_head.weight"));
            assertArrayEquals(new float[] {1, 2}, merged.readFloats("model.layers.1.self_attn.q_proj.weight"));
            // the second slice's layers sit at t = 0 and 1: scale 0.5, then 0
            assertArrayEquals(new float[] {1.5f, 2}, merged.readFloats("model.layers.2.self_attn.q_proj.weight"));
            assertArrayEquals(new float[] {0, 0}, merged.readFloats("model.layers.3.self_attn.q_proj.weight"));
            assertArrayEquals(new float[] {3, 4}, merged.readFloats("model.layers.3.mlp.down_proj.weight"));
        }
        assertEquals(4, new com.fasterxml.jackson.databind.ObjectMapper().readTree(
                out.resolve("config.json").toFile()).get("num_hidden_layers").asInt());
    }

    @Test
    void passthroughRefusesWhatMergekitRefuses() throws IOException {
        Path a = tinyModel("a", 1, 2);
        Path b = tinyModel("b", 3, 4);
        String twoSources = """
                slices:
                  - sources:
                      - model: %s
                        layer_range: [0, 2]
                      - model: %s
                        layer_range: [0, 2]
                merge_method: passthrough
                """.formatted(a, b);
        String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(
                Files.writeString(dir.resolve("two.yml"), twoSources), dir.resolve("x"))).getMessage();
        assertTrue(message.contains("passthrough copies one source per slice"), message);
        String unequal = twoSources.replace("merge_method: passthrough", "merge_method: linear")
                .replaceFirst("\\[0, 2\\]", "[0, 3]");
        message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(
                Files.writeString(dir.resolve("unequal.yml"), unequal), dir.resolve("x"))).getMessage();
        assertTrue(message.contains("all sources of a slice must span the same number of layers"), message);
        String past = twoSources.replace("[0, 2]\n      - model: " + b + "\n        layer_range: [0, 2]", "[1, 4]");
        message = assertThrows(IllegalArgumentException.class, () -> ModelMerge.run(MergeYaml.read(
                Files.writeString(dir.resolve("past.yml"), past), dir.resolve("x")), false, Long.MAX_VALUE)).getMessage();
        assertTrue(message.contains("slices[0].sources[0].layer_range [1, 4] reaches past the 3 layers of"), message);
        String weighted = twoSources.replaceFirst("layer_range: \\[0, 2\\]\n      - model: .*\n        layer_range: \\[0, 2\\]",
                "layer_range: [0, 2]\n        parameters: {weight: 0.5}");
        message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(
                Files.writeString(dir.resolve("weighted.yml"), weighted), dir.resolve("x"))).getMessage();
        assertTrue(message.contains("passthrough takes no weights"), message);
    }

    /**
     * mergekit's modules form (config.py): Mistral's and Mixtral's one module is named default, and
     * {@code modules: {default: {models | slices, parameters}}} merges as the same models or slices at the top, the
     * module's parameters between the models' and the method-wide ones (ConfigReader.parameter): a tensor the module's
     * filters leave unset takes the method-wide value. Other module names (multimodal architectures') and malformed
     * modules are refused at their line.
     */
    @Test
    void modulesDefaultIsTheModelsOrSlicesForm() throws IOException {
        Path base = tinyModel("base", 1, 1);
        Path m = tinyModel("m", 3, 3);
        Path file = Files.writeString(dir.resolve("modules.yml"), """
                merge_method: task_arithmetic
                base_model: %s
                parameters:
                  lambda: 2
                modules:
                  default:
                    models:
                      - model: %s
                    parameters:
                      lambda: [{filter: mlp, value: 0.5}]
                """.formatted(base, m));
        ModelMerge.run(MergeYaml.read(file, dir.resolve("modules")), false, Long.MAX_VALUE);
        try (SafetensorsReader merged = SafetensorsReader.open(dir.resolve("modules"))) {
            assertArrayEquals(new float[] {2, 2}, merged.readFloats("model.layers.1.mlp.down_proj.weight"),
                    "1 + 0.5 (3 - 1): the module's lambda");
            assertArrayEquals(new float[] {5, 5}, merged.readFloats("model.layers.1.self_attn.q_proj.weight"),
                    "1 + 2 (3 - 1): the module's filter leaves it to the method-wide lambda");
        }
        String slices = """
                merge_method: linear
                %s:
                  - sources:
                      - model: %s
                        layer_range: [0, 2]
                  - sources:
                      - model: %s
                        layer_range: [1, 3]
                """;
        Path atTop = Files.writeString(dir.resolve("top.yml"), slices.formatted("slices", base, m));
        Path inModule = Files.writeString(dir.resolve("module.yml"), slices.formatted(
                "modules:\n  default:\n    slices", base, m).replace("\n  - sources", "\n      - sources").replace("\n      - model", "\n          - model")
                .replace("\n        layer_range", "\n            layer_range"));
        assertEquals(MergeYaml.toYaml(MergeYaml.read(atTop, dir.resolve("o"))),
                MergeYaml.toYaml(MergeYaml.read(inModule, dir.resolve("o"))), Files.readString(inModule));
        Map<String, String> refused = Map.of(
                "modules:\n  text_decoder:\n    models: [{model: a}]\n",
                "not supported yet: %s:3:3: modules 'text_decoder': mergekit's Mistral and Mixtral architectures have"
                        + " one module, named default",
                "models: [{model: a}]\nmodules:\n  default:\n    models: [{model: a}]\n",
                "%s:3:1: give one of models, slices or modules",
                "modules:\n  default:\n    models: [{model: a}]\n    slices: []\n", "must give slices or models, one",
                "modules:\n  default:\n    model: a\n",
                "%s:4:5: modules.default.model is not a key of mergekit's module",
                "modules: {}\n", "modules must map the one module of Mistral and Mixtral");
        for (Map.Entry<String, String> entry : refused.entrySet()) {
            Path bad = Files.writeString(dir.resolve("bad.yml"), "merge_method: linear\n" + entry.getKey());
            String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(bad, dir.resolve("o")),
                    entry.getKey()).getMessage();
            String expected = entry.getValue().contains("%s") ? entry.getValue().formatted(bad) : entry.getValue();
            assertTrue(message.contains(expected), entry.getKey() + ": " + message);
        }
    }

    @Test
    void outIsGivenOnceAndItsAbsenceSaysWhereToGiveIt() throws IOException {
        Path both = Files.writeString(dir.resolve("both.yml"), "merge_method: linear\nmodels: [{model: a}]\nout: x\n");
        assertTrue(assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(both, dir.resolve("o")))
                .getMessage().contains("out is given twice"));
        assertEquals(Path.of("x"), MergeYaml.read(both).out(), "a mixtune file's own out still works");
        Path none = Files.writeString(dir.resolve("none.yml"), "merge_method: linear\nmodels: [{model: a}]\n");
        String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(none)).getMessage();
        assertTrue(message.contains("out is missing") && message.contains("mixtune merge merge.yaml OUT"), message);
    }

    @Test
    void aBadParameterSettingIsNamedWithItsLineNotAsARawJacksonError() throws IOException {
        Path file = Files.writeString(dir.resolve("bad.yml"), """
                merge_method: linear
                models:
                  - model: a
                    parameters:
                      weight: [0, "half", 1]
                """);
        String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(file, dir.resolve("o")))
                .getMessage();
        assertTrue(message.startsWith(file + ":5:"), message);
        assertTrue(message.contains("models[0].parameters.weight: expected a number, a list of numbers"), message);
        Path range = Files.writeString(dir.resolve("range.yml"), """
                merge_method: slerp
                models: [{model: a}, {model: b}]
                parameters: {t: [0, 1.5]}
                """);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(range, dir.resolve("o")))
                .getMessage().contains("t must lie in [0, 1]"));
    }

    /**
     * A linear merge of two 3-layer models whose tensors are all 1 (a) and all 3 (b), a's weight the gradient [1, 0]
     * and b's 3 for mlp tensors, else 1, normalised: out = (w_a + 3 w_b) / (w_a + w_b) with w_a = 1 - layer / 2.
     */
    @Test
    void aGradientLinearMergeGivesEachLayerItsOwnWeights() throws IOException {
        Path a = tinyModel("a", 1, 1);
        Path b = tinyModel("b", 3, 3);
        Path file = Files.writeString(dir.resolve("gradient.yml"), """
                merge_method: linear
                models:
                  - model: %s
                    parameters: {weight: [1, 0]}
                  - model: %s
                    parameters:
                      weight:
                        - filter: mlp
                          value: 3
                        - value: 1
                """.formatted(a, b));
        Path out = dir.resolve("merged");
        MergeReport report = ModelMerge.run(MergeYaml.read(file, out), false, Long.MAX_VALUE);
        assertEquals(11, report.tensors());
        Map<String, Double> expected = Map.of(
                "model.embed_tokens.weight", (1 + 3.0) / 2,                        // t = 0: w_a 1, w_b 1
                "model.layers.0.self_attn.q_proj.weight", (1 + 3.0) / 2,
                "model.layers.0.mlp.down_proj.weight", (1 + 3 * 3.0) / (1 + 3),    // w_b 3 for mlp
                "model.layers.1.self_attn.q_proj.weight", (0.5 + 3.0) / 1.5,       // t = 0.5: w_a 0.5
                "model.layers.1.mlp.down_proj.weight", (0.5 + 9.0) / 3.5,
                "model.layers.2.self_attn.q_proj.weight", 3.0,                     // t = 1: w_a 0
                "model.layers.2.mlp.down_proj.weight", 3.0,
                "model.norm.weight", 2.0,
                "lm_head.weight", 2.0);
        try (SafetensorsReader merged = SafetensorsReader.open(out)) {
            for (Map.Entry<String, Double> e : expected.entrySet()) {
                for (float v : merged.readFloats(e.getKey())) {
                    assertEquals(e.getValue(), v, 1e-6, e.getKey());
                }
            }
        }
    }

    @Test
    void tokenizerSourceSaysWhoseTokenizerFilesTheMergeCarries() throws IOException {
        Path a = tinyModel("a", 1, 1);
        Path b = tinyModel("b", 3, 3);
        Files.writeString(a.resolve("tokenizer_config.json"), "{\"chat_template\": \"a\"}");
        Files.writeString(b.resolve("tokenizer_config.json"), "{\"chat_template\": \"b\"}");
        Files.writeString(b.resolve("config.json"), Files.readString(b.resolve("config.json")).replace("{",
                "{\"_name_or_path\": \"b\", "));
        String models = "merge_method: linear\nmodels:\n  - model: " + a + "\n  - model: " + b + "\n";
        Path fromB = Files.writeString(dir.resolve("b.yml"), models + "tokenizer_source: " + b + "\n");
        ModelMerge.run(MergeYaml.read(fromB, dir.resolve("out-b")), false, Long.MAX_VALUE);
        assertEquals("{\"chat_template\": \"b\"}", Files.readString(dir.resolve("out-b/tokenizer_config.json")));
        assertEquals(Files.readString(a.resolve("config.json")), Files.readString(dir.resolve("out-b/config.json")),
                "the model's own files still come from the first model");
        Path plain = Files.writeString(dir.resolve("plain.yml"), models);
        ModelMerge.run(MergeYaml.read(plain, dir.resolve("out-a")), false, Long.MAX_VALUE);
        assertEquals("{\"chat_template\": \"a\"}", Files.readString(dir.resolve("out-a/tokenizer_config.json")));
        Path union = Files.writeString(dir.resolve("union.yml"), models + "tokenizer_source: union\n");
        String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(union, dir.resolve("u")))
                .getMessage();
        assertTrue(message.contains("union") && message.contains("not supported yet")
                && message.contains("name base or one of the models"), message);
    }

    /**
     * The base listed among the models, as mergekit configs often do, is skipped as mergekit skips it: with
     * task_arithmetic normalised, base 1 and a 3 give 1 + (3 - 1) * 1 / 1 = 3, not 1 + (0 + 2) / 2 = 2.
     */
    @Test
    void aBaseListedAmongTheModelsIsNotATaskVector() throws IOException {
        Path base = tinyModel("base", 1, 1);
        Path a = tinyModel("a", 3, 3);
        Path file = Files.writeString(dir.resolve("ta.yml"), """
                merge_method: task_arithmetic
                base_model: %s
                models:
                  - model: %s
                    parameters: {weight: 1.0}
                  - model: %s
                    parameters: {weight: 1.0}
                parameters: {normalize: true}
                """.formatted(base, base, a));
        ModelMerge.run(MergeYaml.read(file, dir.resolve("merged")), false, Long.MAX_VALUE);
        try (SafetensorsReader merged = SafetensorsReader.open(dir.resolve("merged"))) {
            assertEquals(3f, merged.readFloats("model.layers.1.mlp.down_proj.weight")[0], 1e-6);
        }
    }

    /** slerp with a filtered t on orthogonal unit rows: out = sin((1 - t) pi/2) x0 + sin(t pi/2) x1. */
    @Test
    void aFilteredSlerpInterpolatesEachTensorAtItsOwnT() throws IOException {
        Path a = tinyModel("a", 1, 0);
        Path b = tinyModel("b", 0, 1);
        Path file = Files.writeString(dir.resolve("slerp.yml"), """
                slices:
                  - sources:
                      - model: %s
                        layer_range: [0, 3]
                      - model: %s
                        layer_range: [0, 3]
                merge_method: slerp
                base_model: %s
                parameters:
                  t:
                    - filter: self_attn
                      value: [0, 1]
                    - value: 0.5
                """.formatted(a, b, a));
        Path out = dir.resolve("merged");
        ModelMerge.run(MergeYaml.read(file, out), false, Long.MAX_VALUE);
        try (SafetensorsReader merged = SafetensorsReader.open(out)) {
            for (int layer = 0; layer < 3; layer++) {
                double t = layer / 2.0;
                float[] attention = merged.readFloats("model.layers." + layer + ".self_attn.q_proj.weight");
                assertEquals(Math.sin((1 - t) * Math.PI / 2), attention[0], 1e-6, "x0's entry at layer " + layer);
                assertEquals(Math.sin(t * Math.PI / 2), attention[1], 1e-6, "x1's entry at layer " + layer);
                float[] mlp = merged.readFloats("model.layers." + layer + ".mlp.down_proj.weight");
                assertEquals(Math.sin(Math.PI / 4), mlp[0], 1e-6);
            }
        }
        // A range that cuts layers is the one slice it is: two layers, t = 0 and 1 over them (mergekit's per slice).
        Path cut = Files.writeString(dir.resolve("cut.yml"), Files.readString(file).replace("[0, 3]", "[0, 2]"));
        ModelMerge.run(MergeYaml.read(cut, dir.resolve("cut")), false, Long.MAX_VALUE);
        try (SafetensorsReader merged = SafetensorsReader.open(dir.resolve("cut"))) {
            assertEquals(1f, merged.readFloats("model.layers.0.self_attn.q_proj.weight")[0], 1e-6);
            assertEquals(1f, merged.readFloats("model.layers.1.self_attn.q_proj.weight")[1], 1e-6);
            assertTrue(!merged.contains("model.layers.2.self_attn.q_proj.weight"));
        }
        assertEquals(2, new com.fasterxml.jackson.databind.ObjectMapper().readTree(
                dir.resolve("cut/config.json").toFile()).get("num_hidden_layers").asInt());
    }

    /**
     * A slice's parameter stands over the method-wide one where its filter matches, and a source's over both, as
     * mergekit's ConfigReader looks them up: q_proj weighs a by the slice's 3 and b by its own 1, down_proj both by 1.
     */
    @Test
    void aSlicesParametersStandBetweenItsSourcesAndTheMethodWideOnes() throws IOException {
        Path a = tinyModel("a", 1, 2);
        Path b = tinyModel("b", 3, 4);
        Path file = Files.writeString(dir.resolve("layered.yml"), """
                slices:
                  - sources:
                      - model: %s
                        layer_range: [0, 3]
                      - model: %s
                        layer_range: [0, 3]
                        parameters: {weight: 1}
                    parameters:
                      weight: [{filter: q_proj, value: 3}]
                merge_method: linear
                parameters: {weight: 1}
                """.formatted(a, b));
        ModelMerge.run(MergeYaml.read(file, dir.resolve("merged")), false, Long.MAX_VALUE);
        try (SafetensorsReader merged = SafetensorsReader.open(dir.resolve("merged"))) {
            assertArrayEquals(new float[] {1.5f, 2.5f}, merged.readFloats("model.layers.2.self_attn.q_proj.weight"),
                    1e-6f);
            assertArrayEquals(new float[] {2, 3}, merged.readFloats("model.layers.2.mlp.down_proj.weight"), 1e-6f);
        }
    }

    /** slerp slices may pair different models: each slice interpolates its own two sources. */
    @Test
    void slerpSlicesPairDifferentModels() throws IOException {
        Path a = tinyModel("a", 1, 0);
        Path b = tinyModel("b", 0, 1);
        Path c = tinyModel("c", 0, 2);
        Path file = Files.writeString(dir.resolve("pairs.yml"), """
                slices:
                  - sources:
                      - model: %s
                        layer_range: [0, 1]
                      - model: %s
                        layer_range: [0, 1]
                  - sources:
                      - model: %s
                        layer_range: [1, 3]
                      - model: %s
                        layer_range: [1, 3]
                merge_method: slerp
                parameters: {t: 0.5}
                """.formatted(a, b, a, c));
        ModelMerge.run(MergeYaml.read(file, dir.resolve("merged")), false, Long.MAX_VALUE);
        double half = Math.sin(Math.PI / 4);
        try (SafetensorsReader merged = SafetensorsReader.open(dir.resolve("merged"))) {
            assertArrayEquals(new float[] {(float) half, (float) half}, merged.readFloats(
                    "model.layers.0.mlp.down_proj.weight"), 1e-6f);
            // (1, 0) to (0, 2) at t = 0.5: sin(pi/4) times each
            assertArrayEquals(new float[] {(float) half, (float) (2 * half)}, merged.readFloats(
                    "model.layers.2.mlp.down_proj.weight"), 1e-6f);
        }
    }

    /** Stacked slices that break mergekit's rules are refused naming the slice, before anything is written. */
    @Test
    void stackedSlicesThatBreakMergekitsRulesNameTheSlice() throws IOException {
        Path a = tinyModel("a", 1, 2);
        Path b = tinyModel("b", 3, 4);
        String twoSources = """
                slices:
                  - sources:
                      - model: %s
                        layer_range: [0, 1]
                  - sources:
                      - model: %s
                        layer_range: [1, 3]
                      - model: %s
                        layer_range: [0, 2]
                merge_method: passthrough
                """.formatted(a, a, b);
        String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(
                Files.writeString(dir.resolve("two.yml"), twoSources), dir.resolve("x"))).getMessage();
        assertTrue(message.contains("slices[1] has 2 sources: passthrough copies one source per slice"), message);
        String noBase = twoSources.replace("merge_method: passthrough", "merge_method: ties\nbase_model: " + b)
                .replace("model: " + b, "model: " + a).replace("merge_method: ties\nbase_model: " + a,
                        "merge_method: ties\nbase_model: " + b);
        message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(
                Files.writeString(dir.resolve("nobase.yml"), noBase + "parameters: {weight: 1}\n"), dir.resolve("x")))
                .getMessage();
        assertTrue(message.contains("slices[0]: base_model " + b + " is none of its sources"), message);
        assertTrue(!Files.exists(dir.resolve("x")));
    }

    /**
     * nuslerp and multislerp take base_model as their origin, slerp as its t = 0 end: a slice that does not list it
     * would interpolate its two sources instead, silently (mergekit raises: it finds no base tensor), so it is refused
     * as for the task-vector methods.
     */
    @Test
    void sphericalSlicesWithoutTheirBaseAreRefused() throws IOException {
        Path a = tinyModel("a", 1, 2);
        Path b = tinyModel("b", 3, 4);
        Path c = tinyModel("c", 5, 6);
        for (String method : List.of("nuslerp", "multislerp", "slerp")) {
            String yaml = """
                    slices:
                      - sources:
                          - model: %s
                            layer_range: [0, 2]
                          - model: %s
                            layer_range: [0, 2]
                      - sources:
                          - model: %s
                            layer_range: [1, 3]
                          - model: %s
                            layer_range: [1, 3]
                    merge_method: %s
                    base_model: %s
                    parameters: {%s: 1}
                    """.formatted(a, b, a, b, method, c, method.equals("slerp") ? "t" : "weight");
            String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(
                    Files.writeString(dir.resolve(method + ".yml"), yaml), dir.resolve("x")), method).getMessage();
            assertTrue(message.contains("slices[0]: base_model " + c + " is none of its sources"), message);
        }
    }

    /**
     * The methods' model counts hold per slice as for models: a model_stock slice of the base and one model averaged
     * 0 / 0 pairwise cosines into an all-NaN layer, a nuslerp slice of three models dropped the third (mergekit raises
     * for both).
     */
    @Test
    void slicesHoldTheMethodsModelCounts() throws IOException {
        Path a = tinyModel("a", 1, 2);
        Path b = tinyModel("b", 3, 4);
        Path c = tinyModel("c", 5, 6);
        String stock = """
                slices:
                  - sources:
                      - model: %s
                        layer_range: [0, 2]
                      - model: %s
                        layer_range: [0, 2]
                      - model: %s
                        layer_range: [0, 2]
                  - sources:
                      - model: %s
                        layer_range: [2, 3]
                      - model: %s
                        layer_range: [2, 3]
                merge_method: model_stock
                base_model: %s
                """.formatted(c, a, b, c, a, c);
        String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(
                Files.writeString(dir.resolve("stock.yml"), stock), dir.resolve("x"))).getMessage();
        assertTrue(message.contains("slices[1]") && message.contains("at least two other models"), message);
        String nuslerp = """
                slices:
                  - sources:
                      - model: %s
                        layer_range: [0, 2]
                      - model: %s
                        layer_range: [0, 2]
                      - model: %s
                        layer_range: [0, 2]
                  - sources:
                      - model: %s
                        layer_range: [2, 3]
                      - model: %s
                        layer_range: [2, 3]
                merge_method: nuslerp
                parameters: {weight: 1}
                """.formatted(a, b, c, a, b);
        message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(
                Files.writeString(dir.resolve("nuslerp.yml"), nuslerp), dir.resolve("x"))).getMessage();
        assertTrue(message.contains("slices[0]") && message.contains("exactly two models"), message);
    }

    /** A 3-layer model whose tensors are all the 2-entry row {@code values}. */
    /**
     * chat_template as merge.py's _set_chat_template sets it and transformers 5's save_pretrained writes it:
     * chat_template.jinja holds the text as given, tokenizer_config.json no chat_template key (the donor's dropped),
     * chat_template.json gone; auto takes the template most inputs have, stripped (transformers loads
     * chat_template.jinja over tokenizer_config.json, and of a list of named templates the one named default).
     */
    @Test
    void chatTemplateIsWrittenAsMergekitWritesIt() throws IOException {
        Path a = tinyModel("a", 1, 1);
        Path b = tinyModel("b", 3, 3);
        Path c = tinyModel("c", 5, 5);
        for (Path model : List.of(a, b, c)) {
            Files.writeString(model.resolve("tokenizer.json"), "{\"model\": {\"vocab\": {\"<s>\": 1}}}");
        }
        Files.writeString(a.resolve("tokenizer_config.json"), "{\"bos_token\": \"<s>\", \"chat_template\": \"A {{ x }}\"}");
        Files.writeString(a.resolve("chat_template.json"), "{\"chat_template\": \"A {{ x }}\"}");
        Files.writeString(b.resolve("chat_template.jinja"), "\n{{ messages }} B\n");
        Files.writeString(c.resolve("tokenizer_config.json"), "{\"chat_template\": [{\"name\": \"tool_use\","
                + " \"template\": \"T\"}, {\"name\": \"default\", \"template\": \"{{ messages }} B\"}]}");
        String models = "merge_method: linear\nmodels:\n  - model: " + a + "\n  - model: " + b + "\n  - model: " + c
                + "\n";
        String jinja = "{% for m in messages %}{{ m['content'] }}{% endfor %}\n";
        Path given = Files.writeString(dir.resolve("given.yml"), models + "chat_template: \"" + jinja.replace("\n",
                "\\n") + "\"\n");
        ModelMerge.run(MergeYaml.read(given, dir.resolve("given")), false, Long.MAX_VALUE);
        assertEquals(jinja, Files.readString(dir.resolve("given/chat_template.jinja")));
        assertEquals("<s>", JSON.readTree(dir.resolve("given/tokenizer_config.json").toFile()).get("bos_token").asText());
        assertFalse(JSON.readTree(dir.resolve("given/tokenizer_config.json").toFile()).has("chat_template"));
        assertFalse(Files.exists(dir.resolve("given/chat_template.json")));
        Path auto = Files.writeString(dir.resolve("auto.yml"), models + "chat_template: auto\n");
        ModelMerge.run(MergeYaml.read(auto, dir.resolve("auto")), false, Long.MAX_VALUE);
        assertEquals("{{ messages }} B", Files.readString(dir.resolve("auto/chat_template.jinja")),
                "b's and c's template (2 of 3), stripped");
        assertTrue(MergeYaml.toYaml(MergeYaml.read(auto, dir.resolve("auto2"))).contains("chat_template: \"auto\""));
        Path bare = tinyModel("bare", 1, 1);
        Path none = Files.writeString(dir.resolve("none.yml"), "merge_method: linear\nmodels:\n  - model: " + bare
                + "\nchat_template: auto\n");
        String message = assertThrows(IllegalArgumentException.class,
                () -> ModelMerge.run(MergeYaml.read(none, dir.resolve("none")), false, Long.MAX_VALUE)).getMessage();
        assertTrue(message.contains("has tokenizer files to carry it"), message);
        assertFalse(Files.exists(dir.resolve("none")));
    }

    /**
     * What used to fail once the tensors were merged (exit 1) is refused before any is written, naming the key: the
     * template's carrier is the tokenizer of the inputs that are merged (here {@code last: 1} drops the only one with
     * a tokenizer), a tokenizer_config.json the template is written into or auto reads must be JSON, and
     * tokenizer_source must name a model with a tokenizer (mergekit's AutoTokenizer fails on one without; mixtune
     * used to copy the next input's silently). Each out lies under a regular file, where the merge could write
     * nothing: the refusal coming first shows it comes before any writing.
     */
    @Test
    void tokenizerProblemsAreRefusedBeforeAnyTensorIsWritten() throws IOException {
        Path a = tinyModel("a", 1, 1);
        Path b = tinyModel("b", 3, 3);
        Path bare = tinyModel("bare", 5, 5);
        Files.writeString(a.resolve("tokenizer.json"), "{\"model\": {\"vocab\": {\"<s>\": 1}}}");
        Files.writeString(b.resolve("tokenizer.json"), "{\"model\": {\"vocab\": {\"<s>\": 1}}}");
        Files.writeString(b.resolve("tokenizer_config.json"), "{\"chat_template\": ");
        String template = "chat_template: \"{% for m in messages %}{{ m['content'] }}{% endfor %}\"\n";
        Map<String, List<String>> refused = new LinkedHashMap<>();
        refused.put("merge_method: swa\nmodels:\n  - model: " + a + "\n  - model: " + bare + "\nlast: 1\n" + template,
                List.of("chat_template is given, but none of [" + bare + "]", "has tokenizer files to carry it"));
        refused.put("merge_method: linear\nmodels:\n  - model: " + b + "\n  - model: " + a + "\n" + template,
                List.of(b.resolve("tokenizer_config.json") + ": not valid JSON", "chat_template"));
        refused.put("merge_method: linear\nmodels:\n  - model: " + a + "\n  - model: " + b + "\nchat_template: auto\n",
                List.of(b.resolve("tokenizer_config.json") + ": not valid JSON", "chat_template"));
        refused.put("merge_method: linear\nmodels:\n  - model: " + a + "\n  - model: " + bare + "\ntokenizer_source: "
                + bare + "\n", List.of("tokenizer_source: " + bare + " has no tokenizer files (tokenizer_config.json,"
                + " tokenizer.json or tokenizer.model)"));
        refused.put("merge_method: linear\nslices:\n  - sources:\n      - model: " + a
                + "\n        layer_range: [0, 2]\n      - model: " + bare + "\n        layer_range: [0, 2]\ntokenizer_source: " + bare + "\n",
                List.of("tokenizer_source: " + bare + " has no tokenizer files"));
        Path blocked = Files.writeString(dir.resolve("blocked"), "a file, so no directory can be made under it");
        Path fine = Files.writeString(dir.resolve("fine.yml"), "merge_method: linear\nmodels:\n  - model: " + a
                + "\n  - model: " + bare + "\n");
        MergeConfig writing = MergeYaml.read(fine, blocked.resolve("fine"));
        assertFalse(assertThrows(RuntimeException.class, () -> ModelMerge.run(writing, false, Long.MAX_VALUE))
                .getMessage().contains("chat_template"), "a merge that passes its checks fails at writing here");
        int i = 0;
        for (Map.Entry<String, List<String>> entry : refused.entrySet()) {
            Path file = Files.writeString(dir.resolve("refused" + i + ".yml"), entry.getKey());
            Path out = blocked.resolve("out" + i++);
            MergeConfig config = MergeYaml.read(file, out);
            String message = assertThrows(IllegalArgumentException.class, () -> ModelMerge.run(config, false,
                    Long.MAX_VALUE), entry.getKey()).getMessage();
            for (String part : entry.getValue()) {
                assertTrue(message.contains(part), entry.getKey() + ": " + message);
            }
        }
    }

    /**
     * A bundled template's name (merge.py _set_chat_template looks it up in mergekit/_data/chat_templates before
     * checking a literal) writes mixtune's text of it, which BundledChatTemplatesTest renders as mergekit's; another
     * short name is refused at its line, listing the names.
     */
    @Test
    void chatTemplateNamesAreMergekitsBundledTemplates() throws IOException {
        Path a = tinyModel("a", 1, 1);
        Path b = tinyModel("b", 3, 3);
        for (Path model : List.of(a, b)) {
            Files.writeString(model.resolve("tokenizer.json"), "{\"model\": {\"vocab\": {\"<s>\": 1}}}");
            Files.writeString(model.resolve("tokenizer_config.json"), "{\"chat_template\": \"{{ messages }} x\"}");
        }
        String models = "merge_method: linear\nmodels:\n  - model: " + a + "\n  - model: " + b + "\n";
        for (String name : MergedChatTemplate.MERGEKIT_BUNDLED) {
            Path file = Files.writeString(dir.resolve(name + ".yml"), models + "chat_template: " + name + "\n");
            ModelMerge.run(MergeYaml.read(file, dir.resolve(name)), false, Long.MAX_VALUE);
            String written = Files.readString(dir.resolve(name).resolve("chat_template.jinja"));
            assertEquals(MergedChatTemplate.bundled(name), written, name);
            assertTrue(written.contains("{%") && written.contains("messages"), name);
            assertFalse(JSON.readTree(dir.resolve(name).resolve("tokenizer_config.json").toFile())
                    .has("chat_template"));
        }
        Path invalid = Files.writeString(dir.resolve("invalid.yml"), models + "chat_template: vicuna\n");
        String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(invalid, dir.resolve("o")))
                .getMessage();
        assertTrue(message.contains(invalid + ":5:") && message.contains("'vicuna'")
                && message.contains("alpaca, chatml, exaone, llama3, mistral"), message);
    }

    /** mergekit's tokenizer: {source: ...} is its tokenizer_source (plan.py); the embedding-building keys are refused. */
    @Test
    void tokenizerSourceKeyIsTokenizerSource() throws IOException {
        Path a = tinyModel("a", 1, 1);
        Path b = tinyModel("b", 3, 3);
        Files.writeString(a.resolve("tokenizer_config.json"), "{\"chat_template\": \"a\"}");
        Files.writeString(b.resolve("tokenizer_config.json"), "{\"chat_template\": \"b\"}");
        String models = "merge_method: linear\nmodels:\n  - model: " + a + "\n  - model: " + b + "\n";
        Path fromB = Files.writeString(dir.resolve("b.yml"), models + "tokenizer:\n  source: " + b + "\n");
        MergeConfig config = MergeYaml.read(fromB, dir.resolve("out-b"));
        assertEquals(b, config.tokenizerSource());
        ModelMerge.run(config, false, Long.MAX_VALUE);
        assertEquals("{\"chat_template\": \"b\"}", Files.readString(dir.resolve("out-b/tokenizer_config.json")));
        Path base = Files.writeString(dir.resolve("base.yml"), "base_model: " + a + "\n" + models.replace("linear",
                "task_arithmetic") + "tokenizer: {source: base}\n");
        assertEquals(Path.of("base"), MergeYaml.read(base, dir.resolve("o")).tokenizerSource());
        for (String refused : List.of("tokenizer: {source: base, tokens: {x: {source: base}}}\n",
                "tokenizer: {source: base, pad_to_multiple_of: 64}\n", "tokenizer: {}\n",
                "tokenizer: {source: base}\ntokenizer_source: base\n")) {
            Path file = Files.writeString(dir.resolve("refused.yml"), "base_model: " + a + "\n" + models + refused);
            String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(file, dir.resolve("o")))
                    .getMessage();
            assertTrue(message.contains(refused.contains("tokenizer_source") ? "not both" : "not supported yet"),
                    refused + ": " + message);
        }
    }

    /**
     * mergekit's rules for nuslerp, multislerp, nearswap and arcee_fusion, and their parameters (and karcher's and
     * sce's) on other methods, refused up front.
     */
    @Test
    void sphericalNearswapKarcherSceAndFusionSettingsThatMergekitRefusesAreRefused() throws IOException {
        String three = "models:\n  - model: a\n  - model: b\n  - model: c\n";
        Map<String, String> refused = Map.of(
                "merge_method: nuslerp\n" + three, "nuslerp interpolates exactly two models besides base_model",
                "merge_method: nearswap\nbase_model: a\n" + three + "parameters: {t: 0.1}\n",
                "nearswap takes base_model and exactly one other model",
                "merge_method: nearswap\nbase_model: a\nmodels:\n  - model: b\n", "nearswap needs t",
                "merge_method: linear\n" + three + "parameters: {nuslerp_flatten: false}\n",
                "linear takes no nuslerp_flatten",
                "merge_method: nuslerp\nmodels:\n  - model: a\n  - model: b\nparameters: {normalize_weights: false}\n",
                "nuslerp takes no normalize_weights",
                "merge_method: multislerp\n" + three + "parameters: {normalize: false}\n",
                "multislerp's is normalize_weights",
                "merge_method: nearswap\nbase_model: a\nmodels:\n  - model: b\n    parameters: {weight: 2}\n"
                        + "parameters: {t: 0.1}\n", "nearswap takes no weights",
                "merge_method: ties\nbase_model: a\n" + three + "parameters: {select_topk: 0.5}\n",
                "ties takes no select_topk",
                "merge_method: linear\n" + three + "parameters: {max_iter: 5}\n", "linear takes no max_iter",
                "merge_method: arcee_fusion\nbase_model: a\n" + three,
                "arcee_fusion takes base_model and exactly one other model");
        for (Map.Entry<String, String> entry : refused.entrySet()) {
            Path file = Files.writeString(dir.resolve("refused.yml"), entry.getKey());
            String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(file, dir.resolve("o")),
                    entry.getKey()).getMessage();
            assertTrue(message.contains(entry.getValue()), entry.getKey() + ": " + message);
        }
        for (String[] ram : new String[][] {
                {"merge_method: ram\nbase_model: a\nmodels:\n  - model: b\n    parameters: {epsilon: 0.1}\n",
                        "ram takes epsilon method-wide only"},
                {"merge_method: ram\nbase_model: a\nmodels:\n  - model: b\nparameters: {r: 0.5}\n",
                        "ram takes no r or alpha"}}) {
            Path file = Files.writeString(dir.resolve("ram.yml"), ram[0]);
            String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(file, dir.resolve("o")))
                    .getMessage();
            assertTrue(message.contains(ram[1]), ram[0] + ": " + message);
        }
        Path fine = Files.writeString(dir.resolve("fine.yml"), "merge_method: multislerp\nbase_model: a\n" + three
                + "parameters: {normalize_weights: false}\n");
        MergeConfig config = MergeYaml.read(fine, dir.resolve("o"));
        assertFalse(config.normalizeWeights());
        assertEquals(config, MergeYaml.read(Files.writeString(dir.resolve("resolved.yml"), MergeYaml.toYaml(config))));
    }

    /** A slice's residual_weight is declared by mergekit's OutputSliceDefinition and read nowhere: the same merge. */
    @Test
    void aSlicesResidualWeightChangesNothingAsInMergekit() throws IOException {
        String slices = """
                merge_method: passthrough
                slices:
                  - sources:
                      - model: a
                        layer_range: [0, 2]
                  - sources:
                      - model: b
                        layer_range: [1, 3]
                """;
        MergeConfig plain = MergeYaml.read(Files.writeString(dir.resolve("plain.yml"), slices), dir.resolve("o"));
        MergeConfig weighted = MergeYaml.read(Files.writeString(dir.resolve("weighted.yml"),
                slices.replace("  - sources:\n      - model: b", "  - residual_weight: 0.5\n    sources:\n      - model: b")),
                dir.resolve("o"));
        assertEquals(plain, weighted);
        Path text = Files.writeString(dir.resolve("text.yml"), slices.replace("  - sources:\n      - model: b",
                "  - residual_weight: half\n    sources:\n      - model: b"));
        String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(text, dir.resolve("o")))
                .getMessage();
        assertTrue(message.contains("slices[1].residual_weight must be a number"), message);
    }

    private static final ObjectMapper JSON = new ObjectMapper();

    private Path tinyModel(String name, float... values) throws IOException {
        Path model = dir.resolve(name);
        Files.createDirectories(model);
        Files.writeString(model.resolve("config.json"), """
                {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "hidden_size": 2,
                 "num_hidden_layers": 3, "vocab_size": 2}
                """);
        List<String> names = new java.util.ArrayList<>(List.of("model.embed_tokens.weight", "model.norm.weight",
                "lm_head.weight"));
        for (int layer = 0; layer < 3; layer++) {
            names.add("model.layers." + layer + ".self_attn.q_proj.weight");
            names.add("model.layers." + layer + ".mlp.down_proj.weight");
        }
        names.add("model.layers.0.input_layernorm.weight");
        names.add("model.layers.2.input_layernorm.weight");
        List<TensorSpec> specs = names.stream().map(n -> new TensorSpec(n, DType.F32, new long[] {2})).toList();
        SafetensorsWriter.writeCheckpoint(model, specs, Long.MAX_VALUE, new SafetensorsWriter.TensorSource() {
            @Override
            public float[] floats(TensorSpec spec) {
                return values.clone();
            }

            @Override
            public byte[] rawBytes(TensorSpec spec) {
                throw new UnsupportedOperationException();
            }
        });
        return model;
    }
}
