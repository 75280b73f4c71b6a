package io.mixtune.lora.adapter;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.nn.Linear;
import io.mixtune.model.safetensors.ArrayTensors;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeSet;

/**
 * LoRA adapters in Hugging Face PEFT's format, so that {@code PeftModel.from_pretrained} loads what mixtune trains and
 * mixtune loads what PEFT trains: {@code adapter_config.json} and {@code adapter_model.safetensors} with keys
 * {@code base_model.model.<module>.lora_A.weight} [r, in] and {@code ...lora_B.weight} [out, r] (with DoRA, use_dora
 * true, also {@code ...lora_magnitude_vector} [out]). Mixtral experts use
 * the Hub's per-expert module names ({@code block_sparse_moe.experts.3.w1}).
 */
public final class PeftAdapter {
    public static final String CONFIG_FILE = "adapter_config.json";
    public static final String WEIGHTS_FILE = "adapter_model.safetensors";
    /** What PEFT writes with safe_serialization=False: a pickle, never read. */
    public static final String PICKLE_WEIGHTS_FILE = "adapter_model.bin";
    static final String KEY_PREFIX = "base_model.model.";
    private static final ObjectMapper JSON = new ObjectMapper();
    /** A sequence classifier's head in transformers (MistralForSequenceClassification.score), a reward model's. */
    public static final String SCORE_HEAD = "score";

    private PeftAdapter() {}

    /**
     * Writes one adapter, each array straight from its memory ({@link ArrayTensors}); the weights file and then the
     * config are each written whole or not at all.
     */
    public static void save(LoraModel model, String adapterName, Path dir, String baseModelNameOrPath) {
        Map<String, float[][]> initial = model.initialWeights(adapterName);
        LoraConfig config = initial.isEmpty() ? model.config(adapterName)
                : MutatedInitConversion.config(model.config(adapterName));
        List<TensorSpec> specs = new ArrayList<>();
        Map<String, NDArray> arrays = new LinkedHashMap<>();
        List<String> adapted = new ArrayList<>();
        NDManager converted = initial.isEmpty() ? null : model.model().manager().newSubManager();
        model.layers().forEach((module, layer) -> {
            LoraLinear.Adapter adapter = layer.adapter(adapterName);
            if (adapter != null && initial.containsKey(module)) {
                NDArray[] ab = MutatedInitConversion.factors(adapter, initial.get(module), converted);
                add(specs, arrays, aKey(module), ab[0]);
                add(specs, arrays, bKey(module), ab[1]);
                adapted.add(module);
            } else if (adapter != null) {
                add(specs, arrays, aKey(module), adapter.a());
                add(specs, arrays, bKey(module), adapter.b());
                if (adapter.dora()) {
                    add(specs, arrays, magnitudeKey(module), adapter.magnitude());
                }
                adapted.add(module);
            }
        });
        model.modulesToSave(adapterName).forEach((module, weight) ->
                add(specs, arrays, moduleToSaveKey(module), weight));
        try (ArrayTensors tensors = new ArrayTensors(arrays)) {
            write(dir, config, targetModules(model, adapted), List.copyOf(model.modulesToSave(adapterName).keySet()),
                    baseModelNameOrPath, specs, tensors);
        } finally {
            if (converted != null) {
                converted.close();
            }
        }
    }

    /**
     * The adapted modules' names (q_proj, w1, ...), or their full names where the names would take more modules than
     * hold the adapter (one loaded with layers_to_transform or exclude_modules), so a reader targets exactly those.
     */
    private static List<String> targetModules(LoraModel model, List<String> adapted) {
        TreeSet<String> leaves = new TreeSet<>();
        adapted.forEach(module -> leaves.add(module.substring(module.lastIndexOf('.') + 1)));
        List<String> byLeaf = new ArrayList<>();
        model.model().replaceLinears((name, linear) -> {
            if (leaves.contains(name.substring(name.lastIndexOf('.') + 1))) {
                byLeaf.add(name);
            }
            return linear;
        });
        return new TreeSet<>(byLeaf).equals(new TreeSet<>(adapted)) ? List.copyOf(leaves) : List.copyOf(new TreeSet<>(adapted));
    }

    /**
     * {@code base_model.model.<module>.weight}: where PEFT 0.21 saves a module of modules_to_save (its
     * {@code <module>.modules_to_save.default.weight} with the adapter name taken out), such as a reward model's
     * {@code score}.
     */
    public static String moduleToSaveKey(String module) {
        return KEY_PREFIX + module + ".weight";
    }

    /**
     * Writes an adapter from its tensors ({@link #aKey} and {@link #bKey} names) and its config:
     * {@value #WEIGHTS_FILE} first, then {@value #CONFIG_FILE}, each whole or not at all.
     *
     * @param targetModules the names of the modules that hold the adapter, so PEFT targets exactly those
     */
    public static void write(Path dir, LoraConfig config, List<String> targetModules, String baseModelNameOrPath,
            List<TensorSpec> specs, SafetensorsWriter.TensorSource source) {
        write(dir, config, targetModules, List.of(), baseModelNameOrPath, specs, source);
    }

    /**
     * @param modulesToSave modules trained in full, whose tensors ({@link #moduleToSaveKey}) are among the specs: a
     *     score head makes the adapter a sequence classifier's (task_type SEQ_CLS), as PEFT writes a reward model's
     */
    public static void write(Path dir, LoraConfig config, List<String> targetModules, List<String> modulesToSave,
            String baseModelNameOrPath, List<TensorSpec> specs, SafetensorsWriter.TensorSource source) {
        try {
            Files.createDirectories(dir);
            SafetensorsWriter.writeFile(dir.resolve(WEIGHTS_FILE), specs, source);
            Path temporary = dir.resolve("." + CONFIG_FILE + ".partial");
            List<String> adapted = specs.stream().map(spec -> spec.name().endsWith(".lora_A.weight")
                    ? moduleOf(spec.name()) : null).filter(Objects::nonNull).toList();
            JSON.writerWithDefaultPrettyPrinter().writeValue(temporary.toFile(),
                    configJson(config, targetModules, modulesToSave, baseModelNameOrPath, adapted));
            Files.move(temporary, dir.resolve(CONFIG_FILE), StandardCopyOption.REPLACE_EXISTING,
                    StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write the adapter to " + dir + ": " + e.getMessage(), e);
        }
    }

    /**
     * Throws where {@link #save} could not write {@code config} on these modules so that PEFT computes what mixtune
     * does (expert patterns that transformers 5's fused experts cannot hold): for checking a recipe before training.
     */
    public static void checkWritable(LoraConfig config, Collection<String> modules) {
        PeftScales.of(config, modules);
    }

    /** {@code base_model.model.<module>.lora_A.weight}, the key of A [r, in] in PEFT's file. */
    public static String aKey(String module) {
        return KEY_PREFIX + module + ".lora_A.weight";
    }

    /** {@code base_model.model.<module>.lora_B.weight}, the key of B [out, r] in PEFT's file. */
    public static String bKey(String module) {
        return KEY_PREFIX + module + ".lora_B.weight";
    }

    /**
     * {@code base_model.model.<module>.lora_magnitude_vector}, the key of DoRA's magnitude [out] in PEFT's file (its
     * parameter lora_magnitude_vector.default.weight with the adapter name and ".weight" taken out, as PEFT 0.21's
     * get_peft_model_state_dict writes it).
     */
    public static String magnitudeKey(String module) {
        return KEY_PREFIX + module + MAGNITUDE_SUFFIX;
    }

    private static final String MAGNITUDE_SUFFIX = ".lora_magnitude_vector";

    private static void add(List<TensorSpec> specs, Map<String, NDArray> arrays, String key, NDArray array) {
        specs.add(new TensorSpec(key, DType.F32, array.getShape().getShape()));
        arrays.put(key, array);
    }

    /**
     * @param targetModules the names of the modules that hold the adapter, so PEFT targets exactly those
     * @param adapted the full names of those modules, whose ranks and scales PEFT must reproduce ({@link PeftScales})
     */
    static ObjectNode configJson(LoraConfig config, List<String> targetModules, List<String> modulesToSave,
            String baseModelNameOrPath, List<String> adapted) {
        PeftScales.Written written = PeftScales.of(config, adapted);
        ObjectNode json = JSON.createObjectNode();
        json.put("peft_type", "LORA");
        json.put("task_type", modulesToSave.contains(SCORE_HEAD) ? "SEQ_CLS" : "CAUSAL_LM");
        json.put("base_model_name_or_path", baseModelNameOrPath);
        json.put("r", config.r());
        json.put("lora_alpha", written.alpha());
        json.put("lora_dropout", config.dropout());
        // The adapted names, never "all-linear": PEFT's all-linear would also take the Mixtral router.
        targetModules.forEach(json.putArray("target_modules")::add);
        json.put("bias", "none");
        json.put("use_rslora", written.useRslora());
        json.put("use_dora", config.useDora());
        json.put("fan_in_fan_out", false);
        json.put("inference_mode", true);
        json.put("init_lora_weights", true);
        if (modulesToSave.isEmpty()) {
            json.putNull("modules_to_save");
        } else {
            modulesToSave.forEach(json.putArray("modules_to_save")::add);
        }
        ObjectNode ranks = json.putObject("rank_pattern");
        written.rankPattern().forEach(ranks::put);
        ObjectNode alphas = json.putObject("alpha_pattern");
        written.alphaPattern().forEach(alphas::put);
        return json;
    }

    /** Loads a PEFT LoRA adapter under {@code adapterName}, checking every module and shape against the model. */
    public static void load(LoraModel model, Path dir, String adapterName) {
        load(model, dir, adapterName, Map.of());
    }

    /**
     * Loads an adapter whose modules_to_save are exactly {@code modulesToSave} (module to expected shape), such as a
     * reward model's {@code score} head [1, hidden], each added with {@link LoraModel#addModuleToSave}.
     */
    public static void load(LoraModel model, Path dir, String adapterName, Map<String, long[]> modulesToSave) {
        Path configFile = dir.resolve(CONFIG_FILE);
        LoraConfig config = readConfig(configFile, modulesToSave.keySet());
        Map<String, float[]> fullWeights = new LinkedHashMap<>();
        final Map<String, Linear> linears = new LinkedHashMap<>();
        model.model().replaceLinears((name, linear) -> {
            linears.put(name, linear);
            return linear;
        });
        Path weightsFile = weightsFile(dir);
        List<String> problems = new ArrayList<>();
        Map<String, FusedExpertAdapter.Factors> factors = new LinkedHashMap<>();
        Map<String, float[]> magnitudes = new LinkedHashMap<>();
        Map<String, long[]> magnitudeShapes = new LinkedHashMap<>();
        try (SafetensorsReader reader = SafetensorsReader.open(weightsFile)) {
            for (Map.Entry<String, long[]> expected : modulesToSave.entrySet()) {
                String key = moduleToSaveKey(expected.getKey());
                if (!reader.contains(key)) {
                    problems.add("no " + key + " (the " + expected.getKey() + " module trained in full)");
                } else if (!Arrays.equals(reader.info(key).shape(), expected.getValue())) {
                    problems.add(key + " is " + Arrays.toString(reader.info(key).shape()) + ", this model's "
                            + expected.getKey() + " is " + Arrays.toString(expected.getValue()));
                } else {
                    fullWeights.put(expected.getKey(), reader.readFloats(key));
                }
            }
            for (String key : new TreeSet<>(reader.names())) {
                String module = moduleOf(key);
                if (module == null && modulesToSave.keySet().stream().anyMatch(m -> key.equals(moduleToSaveKey(m)))) {
                    continue;
                }
                if (key.startsWith(KEY_PREFIX) && key.endsWith(MAGNITUDE_SUFFIX)) {
                    String dora = key.substring(KEY_PREFIX.length(), key.length() - MAGNITUDE_SUFFIX.length());
                    if (!config.useDora()) {
                        problems.add(key + " is a DoRA magnitude, but " + CONFIG_FILE + " has use_dora false");
                    } else if (!reader.contains(aKey(dora))) {
                        problems.add(dora + " has lora_magnitude_vector but no lora_A");
                    } else {
                        magnitudes.put(dora, reader.readFloats(key));
                        magnitudeShapes.put(dora, reader.info(key).shape());
                    }
                    continue;
                }
                if (module == null) {
                    problems.add(key + " is not a LoRA weight (expected " + KEY_PREFIX + "<module>.lora_A.weight or "
                            + ".lora_B.weight)");
                } else if (key.endsWith(".lora_A.weight")) {
                    String bKey = bKey(module);
                    if (!reader.contains(bKey)) {
                        problems.add(module + " has lora_A but no lora_B");
                        continue;
                    }
                    factors.put(module, new FusedExpertAdapter.Factors(reader.info(key).shape(), reader.readFloats(key),
                            reader.info(bKey).shape(), reader.readFloats(bKey)));
                } else if (!reader.contains(aKey(module))) {
                    problems.add(module + " has lora_B but no lora_A");
                }
            }
        }
        if (factors.keySet().stream().anyMatch(FusedExpertAdapter::isFused)) {
            if (config.useDora()) {
                throw new IllegalArgumentException(weightsFile + ": use_dora with fused Mixtral experts ("
                        + factors.keySet().stream().filter(FusedExpertAdapter::isFused).findFirst().orElseThrow()
                        + "), which PEFT 0.21's lora.ParamWrapper does not train with DoRA");
            }
            try {
                config = FusedExpertAdapter.toPerExpert(model.model().config(), config, factors);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(weightsFile + ": " + e.getMessage(), e);
            }
        }
        Map<String, float[][]> weights = new LinkedHashMap<>();
        List<String> unselected = new ArrayList<>();
        for (Map.Entry<String, FusedExpertAdapter.Factors> entry : factors.entrySet()) {
            String module = entry.getKey();
            if (!appliesTo(config, module)) {
                unselected.add(module);
                continue;
            }
            FusedExpertAdapter.Factors f = entry.getValue();
            Linear linear = linears.get(module);
            if (linear == null) {
                problems.add(module + ": the " + model.model().config().modelType().hfName()
                        + " model has no linear layer " + module);
                continue;
            }
            int rank = config.rankOf(module);
            long[] expectedA = {rank, linear.inFeatures()};
            long[] expectedB = {linear.outFeatures(), rank};
            if (!Arrays.equals(f.aShape(), expectedA) || !Arrays.equals(f.bShape(), expectedB)) {
                problems.add(module + ": lora_A " + Arrays.toString(f.aShape()) + " and lora_B "
                        + Arrays.toString(f.bShape()) + ", expected " + Arrays.toString(expectedA) + " and "
                        + Arrays.toString(expectedB) + " (rank " + rank + " from " + CONFIG_FILE + ")");
                continue;
            }
            if (config.useDora()) {
                float[] magnitude = magnitudes.get(module);
                long[] expected = {linear.outFeatures()};
                if (magnitude == null) {
                    problems.add(module + " has no " + magnitudeKey(module) + " though use_dora is true");
                } else if (!Arrays.equals(magnitudeShapes.get(module), expected)) {
                    problems.add(module + ": lora_magnitude_vector " + Arrays.toString(magnitudeShapes.get(module))
                            + ", expected " + Arrays.toString(expected));
                } else {
                    weights.put(module, new float[][] {f.a(), f.b(), magnitude});
                }
                continue;
            }
            weights.put(module, new float[][] {f.a(), f.b()});
        }
        for (String module : linears.keySet()) {
            if (appliesTo(config, module) && !weights.containsKey(module)) {
                problems.add(module + " is targeted by " + selectionText(config) + " but has no weights");
            }
        }
        if (!unselected.isEmpty()) {
            problems.add(0, "the weights of " + unselected.size() + " modules that " + selectionText(config)
                    + " does not select, which PEFT would drop unused: " + summarize(unselected));
        }
        if (problems.isEmpty() && weights.isEmpty()) {
            problems.add("the adapter applies to no module: " + selectionText(config) + " selects none of its weights");
        }
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException(weightsFile + " does not fit the model: " + summarize(problems));
        }
        model.addAdapter(adapterName, config, weights);
        fullWeights.forEach((module, values) -> model.addModuleToSave(adapterName, module,
                model.model().manager().create(values, new Shape(modulesToSave.get(module)))));
    }

    /**
     * Whether a loaded adapter's tensors for {@code module} apply: the config is authoritative, as in PEFT, whose
     * PeftModel.from_pretrained wraps only the modules its config selects (check_target_module_exists: the name
     * equals an entry of target_modules or ends with "." + entry, or a string target_modules matches the whole name
     * as a regex; "all-linear" is every linear layer but the output one, the Mixtral router included; then
     * layers_to_transform and exclude_modules). PEFT reads the file with load_state_dict(strict=False) and drops the
     * tensors of any other module with no warning; mixtune refuses such a file instead, naming them (see load).
     */
    public static boolean appliesTo(LoraConfig config, String module) {
        return config.targets(module, name -> !name.equals("lm_head") && !name.endsWith(".lm_head"));
    }

    /** The config's fields that select modules, for messages. */
    static String selectionText(LoraConfig config) {
        LoraConfig.Selection selection = config.selection();
        String text = "target_modules " + (selection.targetModulesRegex() ? "\"" + config.targetModules().get(0) + "\""
                : config.targetModules());
        if (!selection.layersToTransform().isEmpty()) {
            text += " with layers_to_transform " + selection.layersToTransform()
                    + (selection.layersPattern().isEmpty() ? "" : " (layers_pattern " + selection.layersPattern() + ")");
        }
        if (!selection.excludeModules().isEmpty()) {
            text += " without exclude_modules " + (selection.excludeModulesRegex()
                    ? "\"" + selection.excludeModules().get(0) + "\"" : selection.excludeModules());
        }
        return text;
    }

    /**
     * The adapter's {@value #WEIGHTS_FILE}. An adapter saved with {@code safe_serialization=False} has only the pickle
     * {@value #PICKLE_WEIGHTS_FILE}: refused as pickle, as checkpoints are, never reported missing.
     */
    public static Path weightsFile(Path dir) {
        Path weightsFile = dir.resolve(WEIGHTS_FILE);
        if (Files.isRegularFile(weightsFile)) {
            return weightsFile;
        }
        if (Files.isRegularFile(dir.resolve(PICKLE_WEIGHTS_FILE))) {
            throw SafetensorsReader.pickleRefused(dir.resolve(PICKLE_WEIGHTS_FILE), "PEFT: PeftModel.from_pretrained("
                    + "base, src).save_pretrained(dst) (safetensors is its default)");
        }
        throw new IllegalArgumentException(weightsFile + ": missing; a PEFT adapter directory holds " + CONFIG_FILE
                + " and " + WEIGHTS_FILE);
    }

    /** The first ten problems and how many more there are. */
    static String summarize(List<String> problems) {
        int shown = Math.min(problems.size(), 10);
        String list = String.join("; ", problems.subList(0, shown));
        return problems.size() > shown ? list + "; ... and " + (problems.size() - shown) + " more" : list;
    }

    /** base_model.model.X.lora_A.weight to X, or null for a key that is not a LoRA weight. */
    public static String moduleOf(String key) {
        if (!key.startsWith(KEY_PREFIX)) {
            return null;
        }
        for (String suffix : List.of(".lora_A.weight", ".lora_B.weight")) {
            if (key.endsWith(suffix)) {
                return key.substring(KEY_PREFIX.length(), key.length() - suffix.length());
            }
        }
        return null;
    }

    public static LoraConfig readConfig(Path configFile) {
        return readConfig(configFile, Set.of());
    }

    /** Whether the adapter is a reward model's: a score head in its config's modules_to_save (task_type SEQ_CLS). */
    public static boolean isRewardModel(Path configFile) {
        try {
            for (JsonNode module : JSON.readTree(Files.readString(configFile)).path("modules_to_save")) {
                if (module.asText().equals(SCORE_HEAD)) {
                    return true;
                }
            }
            return false;
        } catch (IOException e) {
            return false; // readConfig reports an unreadable config
        }
    }

    /** @param modulesToSave the modules the caller trains in full: modules_to_save must name exactly these */
    public static LoraConfig readConfig(Path configFile, Set<String> modulesToSave) {
        JsonNode json;
        try {
            json = JSON.readTree(Files.readString(configFile));
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException(configFile + ": missing; a PEFT adapter directory holds " + CONFIG_FILE
                    + " and " + WEIGHTS_FILE);
        } catch (IOException e) {
            throw new IllegalArgumentException(configFile + ": not valid JSON: " + e.getMessage());
        }
        if (!(json instanceof ObjectNode)) {
            throw new IllegalArgumentException(configFile + ": expected a JSON object");
        }
        try {
            checkModulesToSave(json, modulesToSave);
            return configFrom(json);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(configFile + ": " + e.getMessage(), e);
        }
    }

    /**
     * A reward model's adapter (a score head in modules_to_save, task_type SEQ_CLS) is not a causal LM's, nor the
     * reverse: each refused with what it is. PEFT lists "classifier" beside "score" for SEQ_CLS; a module of the list
     * that the file does not hold is nothing to load.
     */
    private static void checkModulesToSave(JsonNode json, Set<String> expected) {
        Set<String> listed = new TreeSet<>();
        if (json.hasNonNull("modules_to_save")) {
            json.get("modules_to_save").forEach(m -> listed.add(m.asText()));
        }
        boolean scoreListed = listed.contains(SCORE_HEAD);
        boolean scoreExpected = expected.contains(SCORE_HEAD);
        if (scoreListed && !scoreExpected) {
            throw new IllegalArgumentException("a reward model's adapter (task_type " + text(json, "task_type", false)
                    + ", modules_to_save " + listed + "), not a causal LM's: score it with `mixtune reward`");
        }
        if (scoreExpected && !scoreListed) {
            throw new IllegalArgumentException("a causal LM's adapter (modules_to_save " + (listed.isEmpty() ? "null"
                    : listed) + "), not a reward model's: it has no score head (train one with train.method: reward)");
        }
        listed.remove("classifier");
        if (!expected.containsAll(listed)) {
            throw new IllegalArgumentException("modules_to_save " + listed + " is not supported: mixtune "
                    + (expected.isEmpty() ? "adapters hold LoRA weights only" : "trains only " + expected + " in full"));
        }
    }

    private static LoraConfig configFrom(JsonNode json) {
        String peftType = text(json, "peft_type", true);
        if (!peftType.equals("LORA")) {
            throw new IllegalArgumentException("peft_type is \"" + peftType + "\": mixtune loads LORA adapters");
        }
        requireValue(json, "bias", "none", "mixtune adapters train no biases");
        requireFalse(json, "fan_in_fan_out", "mixtune expects A as [r, in] and B as [out, r]");
        checkInitLoraWeights(json);
        JsonNode targets = json.get("target_modules");
        if (targets == null || targets.isNull()) {
            throw new IllegalArgumentException("missing field target_modules: expected a list of module names");
        }
        // PEFT: a string is "all-linear" (any case) or a regex that must match a whole module name.
        boolean regex = targets.isTextual() && !targets.asText().equalsIgnoreCase(LoraConfig.ALL_LINEAR);
        List<String> targetModules = targets.isTextual() && !regex ? List.of(LoraConfig.ALL_LINEAR)
                : strings(targets, "target_modules");
        JsonNode exclude = json.get("exclude_modules");
        boolean excludeRegex = exclude != null && exclude.isTextual();
        List<String> excludeModules = exclude == null || exclude.isNull() ? List.of() : strings(exclude, "exclude_modules");
        JsonNode layers = json.get("layers_to_transform");
        List<Integer> layersToTransform = new ArrayList<>();
        if (layers != null && layers.isArray()) {
            layers.forEach(layer -> layersToTransform.add(integer(layer, "layers_to_transform")));
        } else if (layers != null && !layers.isNull()) {
            layersToTransform.add(integer(layers, "layers_to_transform"));
        }
        JsonNode layersPattern = json.get("layers_pattern");
        List<String> layerNames = layersPattern == null || layersPattern.isNull() ? List.of()
                : strings(layersPattern, "layers_pattern");
        Map<String, Integer> rankPattern = new LinkedHashMap<>();
        object(json, "rank_pattern").fields().forEachRemaining(e -> rankPattern.put(e.getKey(),
                integer(e.getValue(), "rank_pattern." + e.getKey())));
        Map<String, Double> alphaPattern = new LinkedHashMap<>();
        object(json, "alpha_pattern").fields().forEachRemaining(e -> alphaPattern.put(e.getKey(),
                number(e.getValue(), "alpha_pattern." + e.getKey())));
        return new LoraConfig(integer(required(json, "r"), "r"), number(required(json, "lora_alpha"), "lora_alpha"),
                json.hasNonNull("lora_dropout") ? number(json.get("lora_dropout"), "lora_dropout") : 0.0,
                targetModules, bool(json, "use_rslora"), rankPattern, alphaPattern,
                new LoraConfig.Selection(regex, excludeModules, excludeRegex, layersToTransform, layerNames),
                bool(json, "use_dora"));
    }

    /** A string, or a list of strings. */
    private static List<String> strings(JsonNode node, String field) {
        if (node.isTextual()) {
            return List.of(node.asText());
        }
        if (!node.isArray()) {
            throw new IllegalArgumentException(field + " must be a list of module names or one string, got " + node);
        }
        List<String> values = new ArrayList<>();
        node.forEach(t -> {
            if (!t.isTextual()) {
                throw new IllegalArgumentException(field + " must hold strings, got " + t);
            }
            values.add(t.asText());
        });
        return values;
    }

    /**
     * PEFT's initialisers that read the base weight run again in PeftModel.from_pretrained and change it there (PiSSA
     * and CorDA subtract their first update from it, OLoRA likewise, LoftQ replaces it by its quantized copy, LoRA-GA
     * rescales it): the adapter's numbers are only right on that changed base, which mixtune never makes. The others
     * (gaussian, orthogonal, eva, mica) set only A and B, which the file then overwrites.
     */
    private static void checkInitLoraWeights(JsonNode json) {
        JsonNode init = json.get("init_lora_weights");
        if (init == null || init.isNull() || init.isBoolean()) {
            return;
        }
        String value = init.asText();
        String lower = value.toLowerCase(Locale.ROOT);
        if (lower.startsWith("pissa") || lower.startsWith("corda") || lower.equals("olora") || lower.equals("loftq")
                || lower.equals("lora_ga")) {
            throw new IllegalArgumentException("init_lora_weights is \"" + value + "\": PEFT re-runs that initialisation "
                    + "when it loads the adapter and changes the base weights with it, which mixtune does not; save it "
                    + "as a plain LoRA adapter with PEFT's save_pretrained(..., path_initial_model_for_weight_conversion="
                    + "<the adapter saved before training>)");
        }
        if (!List.of("gaussian", "orthogonal", "eva", "mica").contains(lower)) {
            throw new IllegalArgumentException("init_lora_weights is \"" + value + "\": expected true, false, gaussian, "
                    + "orthogonal, eva or mica (PEFT's initialisers that leave the base weights as they are)");
        }
    }

    private static JsonNode required(JsonNode json, String field) {
        if (!json.hasNonNull(field)) {
            throw new IllegalArgumentException("missing field " + field);
        }
        return json.get(field);
    }

    private static String text(JsonNode json, String field, boolean required) {
        JsonNode node = required ? required(json, field) : json.get(field);
        if (node == null || node.isNull()) {
            return null;
        }
        if (!node.isTextual()) {
            throw new IllegalArgumentException("field " + field + " must be a string, got " + node);
        }
        return node.asText();
    }

    private static int integer(JsonNode node, String field) {
        if (!node.isIntegralNumber() || !node.canConvertToInt()) {
            throw new IllegalArgumentException("field " + field + " must be an integer, got " + node);
        }
        return node.intValue();
    }

    private static double number(JsonNode node, String field) {
        if (!node.isNumber()) {
            throw new IllegalArgumentException("field " + field + " must be a number, got " + node);
        }
        return node.doubleValue();
    }

    private static boolean bool(JsonNode json, String field) {
        JsonNode node = json.get(field);
        if (node == null || node.isNull()) {
            return false;
        }
        if (!node.isBoolean()) {
            throw new IllegalArgumentException("field " + field + " must be true or false, got " + node);
        }
        return node.booleanValue();
    }

    private static void requireFalse(JsonNode json, String field, String why) {
        if (bool(json, field)) {
            throw new IllegalArgumentException(field + " is true: " + why);
        }
    }

    private static void requireValue(JsonNode json, String field, String expected, String why) {
        String value = text(json, field, false);
        if (value != null && !value.equals(expected)) {
            throw new IllegalArgumentException(field + " is \"" + value + "\", expected \"" + expected + "\": " + why);
        }
    }

    private static JsonNode object(JsonNode json, String field) {
        JsonNode node = json.get(field);
        if (node == null || node.isNull()) {
            return JSON.createObjectNode();
        }
        if (!node.isObject()) {
            throw new IllegalArgumentException("field " + field + " must be an object, got " + node);
        }
        return node;
    }
}
