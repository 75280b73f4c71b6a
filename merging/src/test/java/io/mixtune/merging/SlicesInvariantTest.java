package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * mergekit's slices stack layer ranges each merged on its own (MergePlanner plans a slice's layers from its sources
 * alone, t running over the slice): a config of two slices, each listing every model of a golden case with one layer
 * range, writes what merging each range alone writes, its layers renumbered where stacked. For every method of the
 * mergekit cases (model_stock, breadcrumbs, della, nuslerp, multislerp, nearswap, karcher, sce, arcee_fusion, ram...),
 * with the case's per-model and method-wide parameters, gradients and seeds; and where no parameter is a gradient, the
 * two slices in order equal the case merged whole (no slices), bit for bit.
 */
class SlicesInvariantTest {
    private static final Path GOLDEN = MergeGoldenTest.GOLDEN;
    private static final ObjectMapper JSON = new ObjectMapper();

    static Stream<Arguments> wholeModelCases() throws IOException {
        List<Arguments> cases = new ArrayList<>();
        for (JsonNode spec : JSON.readTree(GOLDEN.resolve("mergekit_cases.json").toFile())) {
            if (spec.get("config").has("models")) {
                cases.add(Arguments.of(spec.get("name").asText(), spec.get("config")));
            }
        }
        return cases.stream();
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("wholeModelCases")
    void slicesEqualTheirRangesMergedAlone(String name, JsonNode config, @TempDir Path dir) throws IOException {
        Path stacked = merge(sliced(config, List.of(List.of(2, 4), List.of(0, 2))), dir, "stacked");
        Path upper = merge(sliced(config, List.of(List.of(2, 4))), dir, "upper");
        Path lower = merge(sliced(config, List.of(List.of(0, 2))), dir, "lower");
        try (SafetensorsReader out = SafetensorsReader.open(stacked);
                SafetensorsReader up = SafetensorsReader.open(upper);
                SafetensorsReader low = SafetensorsReader.open(lower)) {
            Map<String, SafetensorsReader> from = Map.of("0", up, "1", up, "2", low, "3", low);
            for (String tensor : floats(out)) {
                String layer = tensor.startsWith("model.layers.") ? tensor.split("\\.")[2] : null;
                // the embeddings are the first slice's, the final norm and lm_head the last's
                SafetensorsReader alone = layer != null ? from.get(layer) : tensor.contains("embed_tokens") ? up : low;
                String there = layer == null ? tensor
                        : tensor.replace("layers." + layer + ".", "layers." + Integer.parseInt(layer) % 2 + ".");
                assertArrayEquals(alone.readFloats(there), out.readFloats(tensor), name + ": " + tensor);
            }
            assertEquals(floats(up).size(), floats(out).size() - 16, "4 layers of 8 tensors where each has 2");
        }
        if (!config.toString().contains("[")) {
            Path inOrder = merge(sliced(config, List.of(List.of(0, 2), List.of(2, 4))), dir, "in-order");
            Path whole = merge((ObjectNode) resolved(config.deepCopy()), dir, "whole");
            try (SafetensorsReader a = SafetensorsReader.open(inOrder);
                    SafetensorsReader b = SafetensorsReader.open(whole)) {
                assertEquals(floats(b), floats(a));
                for (String tensor : floats(a)) {
                    assertArrayEquals(b.readFloats(tensor), a.readFloats(tensor), name + ": " + tensor);
                }
            }
        }
    }

    private static TreeSet<String> floats(SafetensorsReader reader) {
        TreeSet<String> names = new TreeSet<>(reader.names());
        names.removeIf(tensor -> !reader.info(tensor).dtype().isFloat32Convertible());
        return names;
    }

    /**
     * The case as slices: each range a slice whose sources are the case's models (and its base, which mergekit wants
     * listed in every slice), each with its own parameters; merge_method, base_model, parameters, seed, dtype kept.
     */
    private static ObjectNode sliced(JsonNode config, List<List<Integer>> ranges) {
        ObjectNode sliced = (ObjectNode) resolved(config.deepCopy());
        ArrayNode models = (ArrayNode) sliced.remove("models");
        List<JsonNode> sources = new ArrayList<>();
        models.forEach(sources::add);
        JsonNode base = sliced.get("base_model");
        if (base != null && sources.stream().noneMatch(s -> s.get("model").equals(base))) {
            sources.add(JSON.createObjectNode().set("model", base));
        }
        ArrayNode slices = sliced.putArray("slices");
        for (List<Integer> range : ranges) {
            ArrayNode list = slices.addObject().putArray("sources");
            for (JsonNode source : sources) {
                ObjectNode copy = source.deepCopy();
                copy.putArray("layer_range").add(range.get(0)).add(range.get(1));
                list.add(copy);
            }
        }
        return sliced;
    }

    private static JsonNode resolved(JsonNode config) {
        ObjectNode object = (ObjectNode) config;
        if (object.has("base_model")) {
            object.put("base_model", GOLDEN.resolve(object.get("base_model").asText()).toAbsolutePath().toString());
        }
        for (JsonNode model : object.path("models")) {
            ((ObjectNode) model).put("model", GOLDEN.resolve(model.get("model").asText()).toAbsolutePath().toString());
        }
        return object;
    }

    private static Path merge(ObjectNode config, Path dir, String name) throws IOException {
        Path file = Files.writeString(dir.resolve(name + ".yml"), JSON.writerWithDefaultPrettyPrinter()
                .writeValueAsString(config));
        ModelMerge.run(MergeYaml.read(file, dir.resolve(name)), false, Long.MAX_VALUE);
        return dir.resolve(name);
    }
}
