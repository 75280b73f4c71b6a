package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.model.safetensors.DType;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** mergekit-style YAML: read into the same record as the command line; mistakes named by file, line and key. */
class MergeYamlTest {
    @TempDir
    Path dir;

    private Path write(String yaml) throws IOException {
        return Files.writeString(dir.resolve("merge.yaml"), yaml);
    }

    private String error(String yaml) throws IOException {
        Path file = write(yaml);
        return assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(file)).getMessage();
    }

    @Test
    void readsAMergekitConfig() throws IOException {
        MergeConfig config = MergeYaml.read(write("""
                merge_method: ties
                base_model: base
                models:
                  - model: math
                    parameters:
                      weight: 1.0
                      density: 0.5
                  - model: code
                parameters:
                  normalize: true
                  int8_mask: true
                  density: 0.7
                  weight: 0.5
                dtype: bfloat16
                seed: 3
                out: merged
                """));
        assertEquals(MergeMethod.TIES, config.method());
        assertEquals(Path.of("base"), config.baseModel());
        assertEquals(2, config.models().size());
        assertEquals(1.0, config.weightOf(0, "model.layers.0.mlp.down_proj.weight", 0));
        assertEquals(0.5, config.weightOf(1, "model.layers.0.mlp.down_proj.weight", 0), "method-wide weight");
        assertEquals(0.5, config.densityOf(0, "model.layers.0.mlp.down_proj.weight", 0));
        assertEquals(0.7, config.densityOf(1, "model.layers.0.mlp.down_proj.weight", 0), "method-wide density");
        assertEquals(DType.BF16, config.dtype());
        assertEquals(3L, config.seed());
        assertTrue(config.normalize());
        assertEquals(1.0, config.lambda("model.layers.0.mlp.down_proj.weight", 0));
        MergeConfig again = MergeYaml.read(write(MergeYaml.toYaml(config)));
        assertEquals(config, again, "the resolved config written next to a merge reads back the same");
    }

    /** model_stock's, breadcrumbs' and della's parameters are checked as mergekit's methods declare them. */
    @Test
    void theNewMethodsParametersAreRefusedAtTheirLine() throws IOException {
        String gamma = error("""
                merge_method: breadcrumbs
                base_model: base
                models:
                  - model: a
                    parameters: {weight: 1, gamma: 1.5}
                out: x
                """);
        assertTrue(gamma.startsWith(dir.resolve("merge.yaml") + ":5:"), gamma);
        assertTrue(gamma.contains("gamma must lie in [0, 1]"), gamma);
        String epsilon = error("merge_method: breadcrumbs\nbase_model: base\nmodels: [{model: a}]\n"
                + "parameters:\n  weight: 1\n  epsilon: 0.1\nout: x\n");
        assertTrue(epsilon.contains(":6:") && epsilon.contains("breadcrumbs takes no epsilon (only della and"
                + " della_linear do"), epsilon);
        String gammaOnDella = error("merge_method: della\nbase_model: base\nmodels: [{model: a}]\n"
                + "parameters:\n  weight: 1\n  gamma: 0.1\nout: x\n");
        assertTrue(gammaOnDella.contains(":6:") && gammaOnDella.contains("della takes no gamma"), gammaOnDella);
        String wide = error("merge_method: della\nbase_model: base\nmodels: [{model: a}]\n"
                + "parameters:\n  weight: 1\n  epsilon: 0.6\nout: x\n");
        assertTrue(wide.contains(":6:") && wide.contains("epsilon must lie in [0, 0.5)"), wide);
        String wideOfAModel = error("merge_method: della\nbase_model: base\nmodels:\n  - model: a\n"
                + "    parameters: {weight: 1, epsilon: 0.6}\nout: x\n");
        assertTrue(wideOfAModel.contains("epsilon must lie in [0, 0.5)"), wideOfAModel);
        // ram's epsilon is a magnitude threshold, not della's spread: any finite value >= 0 (it was refused at 0.5).
        MergeConfig ram = MergeYaml.read(write("merge_method: ram\nbase_model: base\nmodels: [{model: a}, {model: b}]\n"
                + "parameters:\n  epsilon: 0.6\nout: x\n"));
        assertEquals(MergeMethod.RAM, ram.method());
        String negative = error("merge_method: ram\nbase_model: base\nmodels: [{model: a}, {model: b}]\n"
                + "parameters:\n  epsilon: -0.1\nout: x\n");
        assertTrue(negative.contains(":5:") && negative.contains("epsilon must be a finite number >= 0"), negative);
        String filterWise = error("merge_method: ties\nbase_model: base\nmodels: [{model: a}]\n"
                + "parameters:\n  weight: 1\n  filter_wise: true\nout: x\n");
        assertTrue(filterWise.contains(":6:") && filterWise.contains("ties takes no filter_wise (only model_stock"),
                filterWise);
        String oneModel = error("merge_method: model_stock\nbase_model: base\nmodels: [{model: a}]\nout: x\n");
        assertTrue(oneModel.contains("model_stock needs base_model and at least two other models"), oneModel);
        String weighted = error("merge_method: model_stock\nbase_model: base\nmodels:\n  - model: a\n"
                + "    parameters: {weight: 0.5}\n  - model: b\nout: x\n");
        assertTrue(weighted.contains("model_stock takes no weights"), weighted);
    }

    @Test
    void anUnknownKeyIsNamedWithItsLineAndTheNearestValidKey() throws IOException {
        String message = error("""
                merge_method: linear
                models:
                  - model: a
                    parameters:
                      wieght: 1.0
                out: x
                """);
        assertTrue(message.startsWith(dir.resolve("merge.yaml") + ":5:"), message);
        assertTrue(message.contains("unknown key 'wieght' in models[0].parameters (did you mean 'weight'?)"), message);
        assertTrue(message.contains("valid keys here: density, epsilon, gamma, scale, weight"), message);
        String top = error("merge_mehtod: linear\nmodels: [{model: a}]\nout: x\n");
        assertTrue(top.contains(":1:") && top.contains("unknown key 'merge_mehtod' (did you mean 'merge_method'?)"), top);
    }

    @Test
    void badValuesAreNamedByKeyAndLine() throws IOException {
        String density = error("""
                merge_method: ties
                base_model: b
                models:
                  - model: a
                    parameters: {density: 1.5}
                out: x
                """);
        assertTrue(density.startsWith(dir.resolve("merge.yaml") + ":5:"), density);
        assertTrue(density.contains("models[0].parameters: density must lie in (0, 1]"), density);
        String method = error("merge_method: tie\nmodels: [{model: a}]\nout: x\n");
        assertTrue(method.contains(":1:") && method.contains("merge_method: unknown merge method 'tie' (did you mean"
                + " 'ties'?)"), method);
        String type = error("merge_method: linear\nmodels: [{model: a, parameters: {weight: heavy}}]\nout: x\n");
        assertTrue(type.contains(":2:") && type.contains("models[0].parameters.weight"), type);
        String missing = error("merge_method: linear\nmodels: [{model: a}]\n");
        assertTrue(missing.contains("out is missing"), missing);
        String dtype = error("merge_method: linear\nmodels: [{model: a}]\ndtype: int8\nout: x\n");
        assertTrue(dtype.contains(":3:") && dtype.contains("dtype must be bfloat16, float16 or float32"), dtype);
    }

    @Test
    void anAbsentFileIsNamed() {
        Path absent = dir.resolve("absent.yaml");
        assertEquals(absent + ": no such merge config file",
                assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(absent)).getMessage());
    }

    @Test
    void optionalKeysStayUnset() throws IOException {
        MergeConfig config = MergeYaml.read(write("merge_method: swa\nmodels: [{model: run}]\nlast: 3\nout: x\n"));
        assertEquals(3, config.last());
        assertNull(config.dtype());
        assertNull(config.baseModel());
    }
}
