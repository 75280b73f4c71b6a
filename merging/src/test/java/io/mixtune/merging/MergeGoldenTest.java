package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every merge method on the committed random checkpoints and adapters equals numpy's computation of the published
 * formula ({@code interop/make_merge_goldens.py}): TIES and DARE with their seeds, SLERP on both sides of the
 * colinearity threshold, bf16 inputs, a two-shard input, adapters by rank concatenation and by SVD to rank 3.
 */
class MergeGoldenTest {
    static final Path GOLDEN = Path.of("src/test/resources/golden");
    private static final ObjectMapper JSON = new ObjectMapper();

    static Stream<Arguments> cases() throws IOException {
        return namedCases(GOLDEN.resolve("cases.json"));
    }

    /** Each entry of a JSON list of golden cases, with its {@code name} first (the parameterized test's name). */
    static Stream<Arguments> namedCases(Path file) throws IOException {
        List<Arguments> cases = new ArrayList<>();
        for (JsonNode spec : JSON.readTree(file.toFile())) {
            cases.add(Arguments.of(spec.get("name").asText(), spec));
        }
        return cases.stream();
    }

    /** The merge a golden case describes, reading from {@code golden} and writing to {@code out}. */
    static MergeConfig config(JsonNode spec, Path golden, Path out) {
        List<MergeConfig.Model> models = new ArrayList<>();
        for (int i = 0; i < spec.get("models").size(); i++) {
            models.add(new MergeConfig.Model(golden.resolve(spec.get("models").get(i).asText()),
                    new MergeConfig.ModelParameters(number(spec.path("weights").path(i)),
                            number(spec.path("densities").path(i)))));
        }
        MergeConfig.Parameters parameters = new MergeConfig.Parameters(null, number(spec.path("density")),
                spec.has("normalize") ? spec.get("normalize").asBoolean() : null, number(spec.path("lambda")),
                number(spec.path("t")), number(spec.path("decay")),
                spec.has("rescale") ? spec.get("rescale").asBoolean() : null, null);
        return new MergeConfig(MergeMethod.parse(spec.get("method").asText()),
                spec.has("base") ? golden.resolve(spec.get("base").asText()) : null, models, parameters,
                spec.has("last") ? spec.get("last").asInt() : null, spec.has("rank") ? spec.get("rank").asInt() : null,
                spec.has("seed") ? spec.get("seed").asLong() : null,
                spec.has("dtype") ? MergeConfig.parseDtype(spec.get("dtype").asText()) : null, out);
    }

    private static Double number(JsonNode node) {
        return node.isNumber() ? node.asDouble() : null;
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void mergeEqualsNumpy(String name, JsonNode spec, @TempDir Path dir) throws IOException {
        Path out = dir.resolve("out");
        MergeReport report = ModelMerge.run(config(spec, GOLDEN, out), false, 500);
        try (SafetensorsReader expected = SafetensorsReader.open(GOLDEN.resolve(spec.get("expected").asText()))) {
            if (report.adapters()) {
                assertAdapterMatches(expected, out, report);
            } else {
                assertCheckpointMatches(expected, out, spec);
            }
        }
        assertTrue(Files.isRegularFile(out.resolve(MergeYaml.RESOLVED_FILE)), "the resolved config is written");
        try (Stream<Path> siblings = Files.list(dir)) {
            assertEquals(List.of(out), siblings.toList(), "no staging directory is left behind");
        }
    }

    private static void assertCheckpointMatches(SafetensorsReader expected, Path out, JsonNode spec) throws IOException {
        Path first = GOLDEN.resolve(spec.has("base") ? spec.get("base").asText() : spec.get("models").get(0).asText());
        try (SafetensorsReader merged = SafetensorsReader.open(out);
                SafetensorsReader input = SafetensorsReader.open(first)) {
            assertEquals(input.names(), merged.names(), "every tensor of the inputs is written");
            for (String tensor : expected.names()) {
                DType inputType = input.info(tensor).dtype();
                DType wanted = spec.has("dtype") ? MergeConfig.parseDtype(spec.get("dtype").asText()) : inputType;
                assertEquals(wanted, merged.info(tensor).dtype(), tensor);
                assertClose(expected.readFloats(tensor), merged.readFloats(tensor), wanted, tensor);
            }
            for (String tensor : input.names()) {
                if (!input.info(tensor).dtype().isFloat32Convertible()) {
                    assertEquals(input.bytes(tensor), merged.bytes(tensor), "non-float " + tensor + " kept as is");
                }
            }
            assertTrue(merged.files().size() > 1, "a small shard limit shards the output");
        }
        assertArrayEquals(Files.readAllBytes(first.resolve("tokenizer.json")),
                Files.readAllBytes(out.resolve("tokenizer.json")));
        JsonNode config = JSON.readTree(out.resolve("config.json").toFile());
        String dtype = spec.has("dtype") ? spec.get("dtype").asText()
                : JSON.readTree(first.resolve("config.json").toFile()).get("torch_dtype").asText();
        assertEquals(dtype, config.get("torch_dtype").asText());
    }

    private static void assertAdapterMatches(SafetensorsReader expected, Path out, MergeReport report) {
        LoraConfig config = PeftAdapter.readConfig(out.resolve(PeftAdapter.CONFIG_FILE));
        List<String> modules = new ArrayList<>();
        try (SafetensorsReader adapter = SafetensorsReader.open(out.resolve(PeftAdapter.WEIGHTS_FILE))) {
            for (String module : expected.names()) {
                if (module.equals("errors")) {
                    continue;
                }
                modules.add(module);
                long[] aShape = adapter.info(PeftAdapter.aKey(module)).shape();
                long[] bShape = adapter.info(PeftAdapter.bKey(module)).shape();
                assertEquals(config.rankOf(module), aShape[0], module + " rank as the config says");
                float[] dense = product(adapter.readFloats(PeftAdapter.bKey(module)),
                        adapter.readFloats(PeftAdapter.aKey(module)), (int) bShape[0], (int) aShape[0], (int) aShape[1],
                        config.scaleOf(module));
                assertClose(expected.readFloats(module), dense, DType.F32, module);
            }
            if (expected.contains("errors")) {
                float[] errors = expected.readFloats("errors");
                double max = 0;
                double mean = 0;
                for (float e : errors) {
                    max = Math.max(max, e);
                    mean += e / errors.length;
                }
                assertEquals(modules.size(), report.compressedModules());
                assertEquals(max, report.maxError(), 1e-6, "max relative Frobenius error, numpy's SVD");
                assertEquals(mean, report.meanError(), 1e-6, "mean relative Frobenius error, numpy's SVD");
            }
        }
    }

    static Stream<Arguments> mergekitCases() throws IOException {
        List<Arguments> cases = new ArrayList<>();
        for (JsonNode spec : JSON.readTree(GOLDEN.resolve("mergekit_cases.json").toFile())) {
            cases.add(Arguments.of(spec.get("name").asText(), spec));
        }
        return cases.stream();
    }

    /** The golden case's mergekit config with its model paths resolved against {@code golden}. */
    static Path mergekitConfig(JsonNode spec, Path golden, Path dir) throws IOException {
        com.fasterxml.jackson.databind.node.ObjectNode config = spec.get("config").deepCopy();
        if (config.has("base_model")) {
            config.put("base_model", golden.resolve(config.get("base_model").asText()).toString());
        }
        for (JsonNode list : List.of(config.path("slices"), config.path("models"))) {
            for (JsonNode entry : list) {
                for (JsonNode source : entry.has("sources") ? entry.get("sources") : List.of(entry)) {
                    ((com.fasterxml.jackson.databind.node.ObjectNode) source).put("model",
                            golden.resolve(source.get("model").asText()).toString());
                }
            }
        }
        return Files.writeString(dir.resolve("mergekit.yml"), JSON.writerWithDefaultPrettyPrinter()
                .writeValueAsString(config));
    }

    /** mergekit's own forms (slices that stack layers, ...): every output tensor as numpy plans and merges it. */
    @ParameterizedTest(name = "{0}")
    @MethodSource("mergekitCases")
    void mergekitConfigEqualsNumpy(String name, JsonNode spec, @TempDir Path dir) throws IOException {
        Path out = dir.resolve("out");
        ModelMerge.run(MergeYaml.read(mergekitConfig(spec, GOLDEN, dir), out), false, Long.MAX_VALUE);
        try (SafetensorsReader expected = SafetensorsReader.open(GOLDEN.resolve(spec.get("expected").asText()));
                SafetensorsReader merged = SafetensorsReader.open(out)) {
            java.util.Set<String> floats = new java.util.TreeSet<>(merged.names());
            floats.removeIf(tensor -> !merged.info(tensor).dtype().isFloat32Convertible());
            assertEquals(new java.util.TreeSet<>(expected.names()), floats, "the output's tensors are numpy's");
            for (String tensor : expected.names()) {
                assertClose(expected.readFloats(tensor), merged.readFloats(tensor), merged.info(tensor).dtype(),
                        tensor);
            }
        }
        assertEquals(spec.get("num_hidden_layers").asInt(),
                JSON.readTree(out.resolve("config.json").toFile()).get("num_hidden_layers").asInt());
        JsonNode outDtype = spec.get("config").get("out_dtype");
        if (outDtype != null) {
            // mergekit writes out_dtype, and says so in config.json, whatever dtype it computed in.
            try (SafetensorsReader merged = SafetensorsReader.open(out)) {
                for (String tensor : merged.names()) {
                    if (merged.info(tensor).dtype().isFloat32Convertible()) {
                        assertEquals(MergeConfig.parseDtype(outDtype.asText()), merged.info(tensor).dtype(), tensor);
                    }
                }
            }
            assertEquals(outDtype.asText(), JSON.readTree(out.resolve("config.json").toFile()).get("torch_dtype")
                    .asText());
        }
    }

    /** scale * B [out, r] A [r, in]. */
    static float[] product(float[] b, float[] a, int out, int r, int in, double scale) {
        float[] dense = new float[out * in];
        for (int o = 0; o < out; o++) {
            for (int i = 0; i < in; i++) {
                double sum = 0;
                for (int k = 0; k < r; k++) {
                    sum += (double) b[o * r + k] * a[k * in + i];
                }
                dense[o * in + i] = (float) (scale * sum);
            }
        }
        return dense;
    }

    /** fp32: 1e-6 relative; bf16/fp16: one unit in the last place of the output type (rounding twice may cost one). */
    static void assertClose(float[] expected, float[] actual, DType type, String what) {
        assertEquals(expected.length, actual.length, what);
        double relative = switch (type) {
            case BF16 -> 0x1p-7;
            case F16 -> 0x1p-10;
            default -> 1e-6;
        };
        for (int i = 0; i < expected.length; i++) {
            double tolerance = relative * Math.abs(expected[i]) + 1e-7;
            assertTrue(Math.abs(expected[i] - actual[i]) <= tolerance, what + "[" + i + "]: expected " + expected[i]
                    + ", got " + actual[i]);
        }
    }
}
