package io.mixtune.merging;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;

/**
 * mergekit's {@code modules} form (config.py MergeConfiguration.modules, OutputModuleDefinition): per module of the
 * architecture, its {@code slices} or {@code models} and {@code parameters}. mergekit's Mistral and Mixtral
 * architectures (its mistral.json and mixtral.json, of kind "module") have one module, which architecture/__init__.py
 * names {@code default}; plan.py turns models and slices into that module, so {@code modules: {default: ...}} is the
 * same merge as the module's slices or models at the top. Read so: the module's parameters come between its slices'
 * (or models') and the method-wide ones, as ConfigReader.parameter looks them up; a setting the module's filters leave
 * unset for a tensor falls through to the method-wide one (a filtered list followed by the method-wide setting).
 * Another module name is a multi-module (multimodal) architecture's, which mixtune does not merge.
 */
final class MergekitModules {
    /** The name mergekit gives the one module of a single-module architecture (Mistral's and Mixtral's among them). */
    static final String DEFAULT = "default";
    private static final Set<String> MODULE_KEYS = Set.of("slices", "models", "parameters");

    private MergekitModules() {}

    /** The config with its one module's slices or models at the top, its parameters over the method-wide ones. */
    static ObjectNode flattened(Path file, String text, ObjectNode config) {
        String at = file + MergeYaml.where(text, "modules");
        JsonNode modules = config.get("modules");
        if (config.has("slices") || config.has("models")) {
            throw new IllegalArgumentException(at + ": give one of models, slices or modules (as mergekit)");
        }
        if (!modules.isObject() || modules.size() != 1) {
            throw new IllegalArgumentException(at + ": modules must map the one module of Mistral and Mixtral, "
                    + DEFAULT + ", to its slices or models, got " + modules);
        }
        Map.Entry<String, JsonNode> only = modules.properties().iterator().next();
        if (!only.getKey().equals(DEFAULT)) {
            throw new IllegalArgumentException("not supported yet: " + file + MergeYaml.where(text, only.getKey())
                    + ": modules '" + only.getKey() + "': mergekit's Mistral and Mixtral architectures have one module,"
                    + " named " + DEFAULT + "; per-module merges of multi-module (multimodal) architectures are not"
                    + " supported: write modules: {" + DEFAULT + ": ...}, or the slices or models at the top");
        }
        JsonNode module = only.getValue();
        if (!module.isObject()) {
            throw new IllegalArgumentException(at + ": modules." + DEFAULT + " must be a mapping with slices or models,"
                    + " got " + module);
        }
        for (Map.Entry<String, JsonNode> entry : module.properties()) {
            if (!MODULE_KEYS.contains(entry.getKey())) {
                throw new IllegalArgumentException(file + MergeYaml.where(text, entry.getKey()) + ": modules."
                        + DEFAULT + "." + entry.getKey() + " is not a key of mergekit's module (slices, models,"
                        + " parameters)");
            }
        }
        if (module.has("slices") == module.has("models")) {
            // OutputModuleDefinition.validate_inputs
            throw new IllegalArgumentException(at + ": modules." + DEFAULT + " must give slices or models, one of them"
                    + " (as mergekit)");
        }
        ObjectNode flat = config.deepCopy();
        flat.remove("modules");
        String form = module.has("slices") ? "slices" : "models";
        flat.set(form, module.get(form).deepCopy());
        JsonNode moduleParameters = module.path("parameters");
        if (!moduleParameters.isMissingNode() && !moduleParameters.isNull()) {
            if (!moduleParameters.isObject()) {
                throw new IllegalArgumentException(at + ": modules." + DEFAULT + ".parameters must be a mapping, got "
                        + moduleParameters);
            }
            JsonNode global = config.path("parameters");
            ObjectNode merged = global.isObject() ? global.deepCopy() : flat.objectNode();
            moduleParameters.properties().forEach(entry -> merged.set(entry.getKey(),
                    over(entry.getValue(), global.get(entry.getKey()))));
            flat.set("parameters", merged);
        }
        return flat;
    }

    /**
     * The module's setting over the method-wide one: the module's wherever it applies. A filtered list (entries with
     * filter and value) may leave a tensor unset, which then takes the method-wide setting: its entries are followed
     * by the method-wide ones (a number or gradient as one unfiltered entry).
     */
    private static JsonNode over(JsonNode module, JsonNode global) {
        boolean filtered = module.isArray() && module.size() > 0 && module.get(0).isObject();
        if (!filtered || global == null || global.isNull()) {
            return module.deepCopy();
        }
        ArrayNode joined = (ArrayNode) module.deepCopy();
        boolean globalFiltered = global.isArray() && global.size() > 0 && global.get(0).isObject();
        if (globalFiltered) {
            global.forEach(entry -> joined.add(entry.deepCopy()));
        } else {
            joined.addObject().set("value", global.deepCopy());
        }
        return joined;
    }
}
