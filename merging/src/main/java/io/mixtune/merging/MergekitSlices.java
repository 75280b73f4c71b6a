package io.mixtune.merging;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;

/**
 * mergekit's {@code slices} form, read as its {@code models} form where the two mean the same merge: one slice whose
 * sources all span the same layers. mergekit turns {@code models} into exactly such a slice (every source
 * {@code layer_range: [0, num_layers]}), so the merge is the same once the range is checked to be every layer, which
 * {@link LayerwiseMerge#layerCount} does when the models are opened. Slices that cut or stack layers (passthrough
 * frankenmerges) are not supported yet.
 */
final class MergekitSlices {
    private static final Set<String> SLICE_KEYS = Set.of("sources", "parameters", "base_model");
    private static final Set<String> SOURCE_KEYS = Set.of("model", "layer_range", "parameters");

    private MergekitSlices() {}

    /** The config with its one slice turned into {@code models} and {@code layer_range}. */
    static ObjectNode asModels(Path file, ObjectNode config) {
        JsonNode slices = config.get("slices");
        if (config.has("models")) {
            throw new IllegalArgumentException(file + ": give models or slices, not both");
        }
        if (!slices.isArray() || slices.size() != 1) {
            throw new IllegalArgumentException(file + ": not supported yet: " + (slices.isArray() ? slices.size() : "a"
                    + " non-list") + " slices; mixtune reads one slice whose sources span the same layers (the"
                    + " models form); slices that stack or cut layers (passthrough merges) are mergekit's only");
        }
        JsonNode slice = slices.get(0);
        requireKeys(file, slice, SLICE_KEYS, "slices[0]");
        JsonNode sources = slice.path("sources");
        if (!sources.isArray() || sources.isEmpty()) {
            throw new IllegalArgumentException(file + ": slices[0].sources is missing: list the models of the slice");
        }
        ObjectNode converted = config.deepCopy();
        converted.remove("slices");
        ArrayNode models = converted.putArray("models");
        JsonNode range = null;
        for (int i = 0; i < sources.size(); i++) {
            JsonNode source = sources.get(i);
            String at = "slices[0].sources[" + i + "]";
            requireKeys(file, source, SOURCE_KEYS, at);
            JsonNode layers = source.path("layer_range");
            if (!layers.isArray() || layers.size() != 2 || !layers.get(0).canConvertToInt()
                    || !layers.get(1).canConvertToInt()) {
                throw new IllegalArgumentException(file + ": " + at + ".layer_range must be [first, end], got " + layers);
            }
            if (range != null && !range.equals(layers)) {
                throw new IllegalArgumentException(file + ": not supported yet: " + at + ".layer_range " + layers
                        + " differs from " + range + "; mixtune merges sources that span the same layers");
            }
            range = layers;
            ObjectNode model = models.addObject();
            model.set("model", source.get("model"));
            if (source.has("parameters")) {
                model.set("parameters", source.get("parameters"));
            }
        }
        converted.set("layer_range", range);
        if (slice.has("base_model")) {
            JsonNode base = config.get("base_model");
            if (base != null && !base.equals(slice.get("base_model"))) {
                throw new IllegalArgumentException(file + ": slices[0].base_model " + slice.get("base_model")
                        + " differs from base_model " + base + "; give one");
            }
            converted.set("base_model", slice.get("base_model"));
        }
        if (slice.has("parameters")) {
            mergeParameters(file, converted, slice.get("parameters"));
        }
        return converted;
    }

    /** A slice's parameters stand between each source's and the global ones; with one slice they join the global. */
    private static void mergeParameters(Path file, ObjectNode config, JsonNode sliceParameters) {
        if (!sliceParameters.isObject()) {
            throw new IllegalArgumentException(file + ": slices[0].parameters must be a mapping");
        }
        JsonNode global = config.path("parameters");
        ObjectNode merged = global.isObject() ? (ObjectNode) global.deepCopy() : config.objectNode();
        for (Map.Entry<String, JsonNode> entry : sliceParameters.properties()) {
            if (merged.has(entry.getKey())) {
                throw new IllegalArgumentException(file + ": not supported yet: " + entry.getKey() + " in both"
                        + " slices[0].parameters and parameters; give it in one");
            }
            merged.set(entry.getKey(), entry.getValue());
        }
        config.set("parameters", merged);
    }

    private static void requireKeys(Path file, JsonNode node, Set<String> valid, String at) {
        if (!node.isObject()) {
            throw new IllegalArgumentException(file + ": " + at + " must be a mapping");
        }
        for (Map.Entry<String, JsonNode> entry : node.properties()) {
            if (!valid.contains(entry.getKey())) {
                throw new IllegalArgumentException(file + ": unknown key '" + entry.getKey() + "' in " + at
                        + NearestName.suggestion(entry.getKey(), valid) + "; valid keys here: "
                        + String.join(", ", new java.util.TreeSet<>(valid)));
            }
        }
    }
}
