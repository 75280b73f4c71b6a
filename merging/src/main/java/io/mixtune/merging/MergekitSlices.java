package io.mixtune.merging;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;

/**
 * mergekit's {@code slices} form. Read as its {@code models} form where the two mean the same merge: one slice whose
 * sources all span the same layers from 0. mergekit turns {@code models} into exactly such a slice (every source
 * {@code layer_range: [0, num_layers]}), so the merge is the same when the range is every layer, which
 * {@link LayerwiseMerge#layerCount} checks when the models are opened (a shorter range is merged as the one slice it
 * is). Other slices (stacked, or starting past layer 0: frankenmerges) stay slices, planned by {@link SlicePlan}, with
 * {@code models} listing their models once each in order of appearance.
 */
final class MergekitSlices {
    private static final Set<String> SLICE_KEYS = Set.of("sources", "parameters", "base_model");
    private static final Set<String> SOURCE_KEYS = Set.of("model", "layer_range", "parameters");

    private MergekitSlices() {}

    /** The config with its one slice turned into {@code models} and {@code layer_range}, or its slices kept. */
    static ObjectNode asModels(Path file, ObjectNode original) {
        ObjectNode config = withoutResidualWeights(file, original);
        JsonNode slices = config.get("slices");
        if (config.has("models")) {
            throw new IllegalArgumentException(file + ": give models or slices, not both");
        }
        if (!slices.isArray() || slices.isEmpty()) {
            throw new IllegalArgumentException(file + ": slices must be a list of slices, each with its sources");
        }
        if (slices.size() != 1 || !oneRangeFromZero(slices.get(0)) || sharesParameters(slices.get(0), config)) {
            return withSlices(file, config);
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

    /** Whether the slice and the method-wide parameters both give a key: the slice's then stands over the other's. */
    private static boolean sharesParameters(JsonNode slice, JsonNode config) {
        JsonNode global = config.path("parameters");
        for (Map.Entry<String, JsonNode> entry : slice.path("parameters").properties()) {
            if (global.has(entry.getKey())) {
                return true;
            }
        }
        return false;
    }

    /** Whether the slice's sources all span the same layers, from layer 0: the models form. */
    private static boolean oneRangeFromZero(JsonNode slice) {
        JsonNode sources = slice.path("sources");
        if (!sources.isArray() || sources.isEmpty()) {
            return true;
        }
        JsonNode range = sources.get(0).path("layer_range");
        for (JsonNode source : sources) {
            if (!source.path("layer_range").equals(range)) {
                return false;
            }
        }
        return !range.isArray() || range.path(0).asInt(-1) == 0;
    }

    /**
     * The slices as they are, each slice's base_model (if any) checked against the method-wide one, and models listing
     * every source's model once: the record checks them, {@link SlicePlan} plans them.
     */
    /**
     * The config without its slices' residual_weight: mergekit's OutputSliceDefinition declares it and nothing reads it,
     * so a number there changes nothing in mergekit either.
     */
    private static ObjectNode withoutResidualWeights(Path file, ObjectNode config) {
        ObjectNode copy = config.deepCopy();
        JsonNode slices = copy.get("slices");
        for (int i = 0; slices != null && slices.isArray() && i < slices.size(); i++) {
            if (slices.get(i) instanceof ObjectNode slice && slice.has("residual_weight")) {
                if (!slice.get("residual_weight").isNumber()) {
                    throw new IllegalArgumentException(file + ": slices[" + i + "].residual_weight must be a number,"
                            + " got " + slice.get("residual_weight"));
                }
                slice.remove("residual_weight");
            }
        }
        return copy;
    }

    private static ObjectNode withSlices(Path file, ObjectNode config) {
        ObjectNode converted = config.deepCopy();
        ArrayNode models = converted.putArray("models");
        java.util.Set<JsonNode> seen = new java.util.LinkedHashSet<>();
        JsonNode slices = converted.get("slices");
        for (int i = 0; i < slices.size(); i++) {
            JsonNode slice = slices.get(i);
            requireKeys(file, slice, SLICE_KEYS, "slices[" + i + "]");
            JsonNode sources = slice.path("sources");
            if (!sources.isArray() || sources.isEmpty()) {
                throw new IllegalArgumentException(file + ": slices[" + i + "].sources is missing: list the models of"
                        + " the slice");
            }
            for (int j = 0; j < sources.size(); j++) {
                requireKeys(file, sources.get(j), SOURCE_KEYS, "slices[" + i + "].sources[" + j + "]");
                JsonNode model = sources.get(j).get("model");
                if (model != null && seen.add(model)) {
                    models.addObject().set("model", model);
                }
            }
            if (slice.has("base_model")) {
                JsonNode base = converted.get("base_model");
                if (base != null && !base.equals(slice.get("base_model"))) {
                    throw new IllegalArgumentException(file + ": slices[" + i + "].base_model " + slice.get("base_model")
                            + " differs from base_model " + base + "; mixtune measures every slice from one base");
                }
                converted.set("base_model", slice.get("base_model"));
                ((ObjectNode) slice).remove("base_model");
            }
        }
        return converted;
    }

    /**
     * A slice's parameters stand between each source's and the global ones; with one slice whose keys the global ones
     * lack they join them.
     */
    private static void mergeParameters(Path file, ObjectNode config, JsonNode sliceParameters) {
        if (!sliceParameters.isObject()) {
            throw new IllegalArgumentException(file + ": slices[0].parameters must be a mapping");
        }
        JsonNode global = config.path("parameters");
        ObjectNode merged = global.isObject() ? (ObjectNode) global.deepCopy() : config.objectNode();
        for (Map.Entry<String, JsonNode> entry : sliceParameters.properties()) {
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
