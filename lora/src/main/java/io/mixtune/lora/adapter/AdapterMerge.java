package io.mixtune.lora.adapter;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.PathOverlap;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * Folds a LoRA adapter into its base checkpoint, W' = W + scale * B A (PEFT's merge_and_unload; with DoRA
 * W' = m / ||W + scale B A|| * (W + scale B A), the norm per output row), streaming: one base
 * tensor is in memory at a time, plus the adapter. The result is a plain Hugging Face checkpoint; a reward model's
 * adapter (a score head in modules_to_save) gives a {@code ...ForSequenceClassification} one (num_labels 1: score in
 * place of lm_head), which transformers' AutoModelForSequenceClassification loads.
 */
public final class AdapterMerge {
    /** The files besides the weights that describe the model: copied from the base (or first) model. */
    public static final List<String> MODEL_FILES = List.of("config.json", "generation_config.json");

    /** The tokenizer's files, mergekit's list (merge.py, _copy_tokenizer). */
    public static final List<String> TOKENIZER_FILES = List.of("tokenizer_config.json", "special_tokens_map.json",
            "tokenizer.json", "tokenizer.model", "added_tokens.json", "merges.txt", "chat_template.jinja",
            "chat_template.json");

    /** The chat template as transformers 5 saves it (the .jinja) and as processors save it; read before the config's. */
    private static final List<String> TEMPLATE_FILES = List.of("chat_template.jinja", "chat_template.json");

    private static final String LM_HEAD = "lm_head.weight";
    private static final String SCORE = "score.weight";

    private AdapterMerge() {}

    /**
     * One adapter module's delta, and where it lands in a base tensor (a slice of a fused expert tensor, say); with
     * DoRA its magnitude [out], else null.
     */
    private record Delta(String module, float[] a, float[] b, int rank, double scale, long firstElement,
            float[] magnitude) {}

    /**
     * @param dtype the dtype of the merged weights, or null to keep each tensor's own
     */
    public static List<Path> merge(Path modelDir, Path adapterDir, Path outDir, DType dtype, long maxShardBytes) {
        for (Path input : List.of(modelDir, adapterDir)) {
            String problem = PathOverlap.problem("out", outDir, input);
            if (problem != null) {
                throw new IllegalArgumentException(problem);
            }
        }
        ModelConfig config = ModelConfig.read(modelDir.resolve("config.json"));
        boolean rewardModel = PeftAdapter.isRewardModel(adapterDir.resolve(PeftAdapter.CONFIG_FILE));
        String headKey = PeftAdapter.moduleToSaveKey(PeftAdapter.SCORE_HEAD);
        try (Merged merged = new Merged(modelDir, adapterDir, config, rewardModel)) {
            SafetensorsReader base = merged.base();
            SafetensorsReader adapter = merged.adapter;
            List<TensorSpec> specs = new ArrayList<>();
            for (String name : new TreeSet<>(base.names())) {
                if (rewardModel && name.equals(LM_HEAD)) {
                    continue; // a sequence classifier has no lm_head
                }
                DType source = base.info(name).dtype();
                if (!source.isFloat32Convertible()) {
                    throw new IllegalArgumentException(name + " in " + base.info(name).file() + " is " + source
                            + ": merging handles F32, F16 and BF16 checkpoints");
                }
                specs.add(new TensorSpec(name, dtype == null ? source : dtype, base.info(name).shape()));
            }
            if (rewardModel) {
                long[] head = adapter.info(headKey).shape();
                if (head.length != 2 || head[0] != 1 || head[1] != config.hiddenSize()) {
                    throw new IllegalArgumentException(adapterDir + ": score head " + Arrays.toString(head)
                            + " does not fit the model's hidden size " + config.hiddenSize() + " (expected [1, "
                            + config.hiddenSize() + "])");
                }
                DType headType = dtype != null ? dtype : base.info("model.norm.weight").dtype();
                specs.add(new TensorSpec(SCORE, headType, head));
            }
            Files.createDirectories(outDir);
            List<Path> files = SafetensorsWriter.writeCheckpoint(outDir, specs, maxShardBytes, spec -> {
                if (rewardModel && spec.name().equals(SCORE)) {
                    return adapter.readFloats(headKey);
                }
                return merged.read(spec.name());
            });
            for (Map.Entry<String, Path> file : companionSources(modelDir, adapterDir).entrySet()) {
                Files.copy(file.getValue().resolve(file.getKey()), outDir.resolve(file.getKey()),
                        StandardCopyOption.REPLACE_EXISTING);
            }
            if (dtype != null) {
                ModelConfig.recordDtype(outDir.resolve("config.json"), dtype);
            }
            if (rewardModel) {
                writeSequenceClassifierConfig(outDir.resolve("config.json"), config);
            }
            return files;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write the merged checkpoint to " + outDir + ": " + e.getMessage(), e);
        }
    }

    /**
     * A base checkpoint with an adapter folded in, read one tensor at a time: the weights {@link #merge} writes, for
     * a writer of another format (a GGUF export). Without an adapter it reads the base as it is.
     */
    public static final class Merged implements AutoCloseable {
        private final SafetensorsReader base;
        private final SafetensorsReader adapter;
        private final Map<String, List<Delta>> deltasByTensor;

        /**
         * @param adapterDir the LoRA adapter (PEFT format), or null for the base alone; a reward model's adapter is
         *     refused (its score head replaces the lm_head: {@link #merge} writes it as a sequence classifier)
         */
        public static Merged open(Path modelDir, Path adapterDir) {
            ModelConfig config = ModelConfig.read(modelDir.resolve("config.json"));
            if (adapterDir != null && PeftAdapter.isRewardModel(adapterDir.resolve(PeftAdapter.CONFIG_FILE))) {
                throw new IllegalArgumentException(adapterDir + " is a reward model's adapter (a score head in"
                        + " modules_to_save): it scores chats and does not generate text; export a causal LM's"
                        + " adapter");
            }
            return new Merged(modelDir, adapterDir, config, false);
        }

        private Merged(Path modelDir, Path adapterDir, ModelConfig config, boolean rewardModel) {
            String headKey = PeftAdapter.moduleToSaveKey(PeftAdapter.SCORE_HEAD);
            LoraConfig loraConfig = adapterDir == null ? null : PeftAdapter.readConfig(adapterDir.resolve(
                    PeftAdapter.CONFIG_FILE), rewardModel ? Set.of(PeftAdapter.SCORE_HEAD) : Set.of());
            SafetensorsReader opened = SafetensorsReader.open(modelDir);
            SafetensorsReader openedAdapter = null;
            try {
                if (adapterDir != null) {
                    openedAdapter = SafetensorsReader.open(PeftAdapter.weightsFile(adapterDir));
                }
                this.deltasByTensor = adapterDir == null ? Map.of() : plan(config, loraConfig, opened, openedAdapter,
                        adapterDir, rewardModel ? Set.of(headKey) : Set.of());
            } catch (RuntimeException e) {
                try {
                    opened.close();
                } finally {
                    if (openedAdapter != null) {
                        openedAdapter.close();
                    }
                }
                throw e;
            }
            this.base = opened;
            this.adapter = openedAdapter;
        }

        /** The base checkpoint: its tensor names, shapes and dtypes. */
        public SafetensorsReader base() {
            return base;
        }

        /** The base tensor {@code name} as float32, every adapter delta that lands in it added (W + scale B A). */
        public float[] read(String name) {
            float[] weight = base.readFloats(name);
            long[] shape = base.info(name).shape();
            long columns = shape[shape.length - 1];
            for (Delta delta : deltasByTensor.getOrDefault(name, List.of())) {
                addDelta(weight, delta, (int) columns);
            }
            return weight;
        }

        @Override
        public void close() {
            try {
                base.close();
            } finally {
                if (adapter != null) {
                    adapter.close();
                }
            }
        }
    }

    /**
     * Each file a merged checkpoint carries besides its weights, and the directory it is copied from: the model files
     * from the base, the tokenizer's as {@link #tokenizerSources} picks them with the adapter's folder first (an
     * adapter mixtune trained carries the tokenizer files with the chat template it was trained with).
     */
    public static Map<String, Path> companionSources(Path modelDir, Path adapterDir) {
        Map<String, Path> sources = new java.util.LinkedHashMap<>();
        for (String file : MODEL_FILES) {
            if (Files.isRegularFile(modelDir.resolve(file))) {
                sources.put(file, modelDir);
            }
        }
        sources.putAll(tokenizerSources(List.of(adapterDir, modelDir)));
        return sources;
    }

    /**
     * Each tokenizer file from the first directory that holds it, except the chat template files: transformers 5 reads a
     * chat_template.jinja before the template in tokenizer_config.json, so one input's .jinja would silently replace
     * the template another's tokenizer_config.json brings. They come from the directory whose tokenizer_config.json is
     * copied if that one has a template (in either place), else from the first that has one.
     */
    public static Map<String, Path> tokenizerSources(List<Path> dirsInPriority) {
        Path configFrom = firstHolding(dirsInPriority, "tokenizer_config.json");
        List<Path> templateOrder = new ArrayList<>(dirsInPriority);
        if (configFrom != null) {
            templateOrder.add(0, configFrom);
        }
        Path templateFrom = templateOrder.stream().filter(AdapterMerge::hasChatTemplate).findFirst().orElse(null);
        Map<String, Path> sources = new java.util.LinkedHashMap<>();
        for (String file : TOKENIZER_FILES) {
            Path from = !TEMPLATE_FILES.contains(file) ? firstHolding(dirsInPriority, file)
                    : templateFrom != null && Files.isRegularFile(templateFrom.resolve(file)) ? templateFrom : null;
            if (from != null) {
                sources.put(file, from);
            }
        }
        return sources;
    }

    private static boolean hasChatTemplate(Path dir) {
        if (TEMPLATE_FILES.stream().anyMatch(file -> Files.isRegularFile(dir.resolve(file)))) {
            return true;
        }
        Path config = dir.resolve("tokenizer_config.json");
        try {
            return Files.isRegularFile(config) && new ObjectMapper().readTree(config.toFile()).hasNonNull("chat_template");
        } catch (IOException e) {
            return false; // not JSON: it brings no template transformers could read
        }
    }

    private static Path firstHolding(List<Path> dirs, String file) {
        return dirs.stream().filter(dir -> Files.isRegularFile(dir.resolve(file))).findFirst().orElse(null);
    }

    /**
     * transformers' config of a reward model: the ForSequenceClassification architecture, one label (num_labels 1 is
     * read from id2label) and the pad id it finds each sequence's last token with (EOS, as mixtune and TRL pad).
     */
    private static void writeSequenceClassifierConfig(Path configFile, ModelConfig config) throws IOException {
        ObjectMapper json = new ObjectMapper();
        ObjectNode node = (ObjectNode) json.readTree(configFile.toFile());
        String family = config.isMixtureOfExperts() ? "Mixtral" : "Mistral";
        node.putArray("architectures").add(family + "ForSequenceClassification");
        node.putObject("id2label").put("0", "LABEL_0");
        node.putObject("label2id").put("LABEL_0", 0);
        if (!node.hasNonNull("pad_token_id")) {
            node.put("pad_token_id", config.eosTokenId());
        }
        json.writerWithDefaultPrettyPrinter().writeValue(configFile.toFile(), node);
    }

    /**
     * Maps every adapter module onto its base tensor before anything is written, so a mismatch fails early. A tensor
     * that fits no module and a module the config selects without weights are refused as {@link PeftAdapter#load}
     * refuses them (PEFT merges the rest: it drops the one unused and leaves the other at its init, B = 0).
     *
     * @param fullWeights the keys of modules trained in full (a reward model's score head), merged elsewhere
     */
    private static Map<String, List<Delta>> plan(ModelConfig config, LoraConfig loraConfig, SafetensorsReader base,
            SafetensorsReader adapter, Path adapterDir, Set<String> fullWeights) {
        Map<String, List<Delta>> deltas = new HashMap<>();
        List<String> problems = new ArrayList<>();
        Set<String> withWeights = new HashSet<>();
        for (String key : new TreeSet<>(adapter.names())) {
            String module = PeftAdapter.moduleOf(key);
            if (loraConfig.useDora() && key.endsWith(".lora_magnitude_vector")) {
                continue; // read with its module's A and B
            }
            if (module == null && !fullWeights.contains(key)) {
                problems.add(key + " is not a LoRA weight (expected " + PeftAdapter.KEY_PREFIX
                        + "<module>.lora_A.weight or .lora_B.weight)");
                continue;
            }
            if (module == null || !key.endsWith(".lora_A.weight")) {
                if (module != null && !adapter.contains(PeftAdapter.aKey(module))) {
                    problems.add(module + " has lora_B but no lora_A");
                }
                continue;
            }
            withWeights.add(module);
            if (!PeftAdapter.appliesTo(loraConfig, module)) {
                // PEFT would drop them unused: refused as load refuses them
                problems.add(module + "'s weights, which the adapter's config does not select");
                continue;
            }
            String bKey = "base_model.model." + module + ".lora_B.weight";
            if (!adapter.contains(bKey)) {
                problems.add(module + " has lora_A but no lora_B");
                continue;
            }
            int rank = (int) adapter.info(key).shape()[0];
            long in = adapter.info(key).shape()[1];
            long out = adapter.info(bKey).shape()[0];
            Target target = target(config, module, base);
            if (target == null) {
                problems.add(module + ": the base checkpoint has no weight for it");
                continue;
            }
            if (target.rows() != out || target.columns() != in || adapter.info(bKey).shape()[1] != rank) {
                problems.add(module + ": A " + Arrays.toString(adapter.info(key).shape()) + " and B "
                        + Arrays.toString(adapter.info(bKey).shape()) + " do not fit the base weight [" + target.rows()
                        + ", " + target.columns() + "]");
                continue;
            }
            float[] magnitude = null;
            if (loraConfig.useDora()) {
                String magnitudeKey = PeftAdapter.magnitudeKey(module);
                try {
                    loraConfig.checkDoraTarget(module);
                } catch (IllegalArgumentException e) {
                    problems.add(e.getMessage());
                    continue;
                }
                if (!adapter.contains(magnitudeKey) || !Arrays.equals(adapter.info(magnitudeKey).shape(),
                        new long[] {out})) {
                    problems.add(module + ": use_dora is true but " + magnitudeKey + " is "
                            + (adapter.contains(magnitudeKey) ? Arrays.toString(adapter.info(magnitudeKey).shape())
                            : "missing") + ", expected [" + out + "]");
                    continue;
                }
                magnitude = adapter.readFloats(magnitudeKey);
            }
            deltas.computeIfAbsent(target.tensor(), t -> new ArrayList<>()).add(new Delta(module, adapter.readFloats(key),
                    adapter.readFloats(bKey), rank, loraConfig.scaleOf(module), target.firstElement(), magnitude));
        }
        for (String module : MistralCheckpoint.linearShapes(config).keySet()) {
            if (PeftAdapter.appliesTo(loraConfig, module) && !withWeights.contains(module)) {
                problems.add(module + " is targeted by " + PeftAdapter.selectionText(loraConfig)
                        + " but has no weights");
            }
        }
        if (problems.isEmpty() && deltas.isEmpty()) {
            problems.add("the adapter applies to no module");
        }
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException(adapterDir + " does not fit " + config.modelType().hfName() + " model: "
                    + PeftAdapter.summarize(problems));
        }
        return deltas;
    }

    /** Where a module's [rows, columns] weight lies: a whole tensor, or a slice of a fused expert tensor. */
    private record Target(String tensor, long firstElement, long rows, long columns) {}

    private static Target target(ModelConfig config, String module, SafetensorsReader base) {
        String weight = module + ".weight";
        if (base.contains(weight)) {
            long[] shape = base.info(weight).shape();
            return shape.length == 2 ? new Target(weight, 0, shape[0], shape[1]) : null;
        }
        // transformers 5's fused Mixtral layout: experts.gate_up_proj [E, 2I, H] (gate rows first), down_proj [E, H, I].
        java.util.regex.Matcher expert = java.util.regex.Pattern
                .compile("(model\\.layers\\.\\d+)\\.block_sparse_moe\\.experts\\.(\\d+)\\.(w1|w2|w3)").matcher(module);
        long inter = config.intermediateSize();
        long hidden = config.hiddenSize();
        if (expert.matches()) {
            int j = Integer.parseInt(expert.group(2));
            String prefix = expert.group(1) + ".mlp.experts.";
            return switch (expert.group(3)) {
                case "w1" -> new Target(prefix + "gate_up_proj", j * 2 * inter * hidden, inter, hidden);
                case "w3" -> new Target(prefix + "gate_up_proj", (j * 2 + 1) * inter * hidden, inter, hidden);
                default -> new Target(prefix + "down_proj", j * hidden * inter, hidden, inter);
            };
        }
        if (module.endsWith(".block_sparse_moe.gate")) {
            String fusedRouter = module.replace(".block_sparse_moe.gate", ".mlp.gate.weight");
            if (base.contains(fusedRouter)) {
                long[] shape = base.info(fusedRouter).shape();
                return new Target(fusedRouter, 0, shape[0], shape[1]);
            }
        }
        return null;
    }

    /**
     * weight[first + o * columns + i] += scale * sum_k B[o, k] A[k, i]; with DoRA each row then times m[o] over its
     * norm, PEFT's DoraLinearVariant.merge_unsafe (the norm of the unmerged W + delta, as the forward takes it).
     */
    private static void addDelta(float[] weight, Delta delta, int columns) {
        int rows = delta.b().length / delta.rank();
        int start = Math.toIntExact(delta.firstElement());
        float[] row = new float[columns];
        for (int o = 0; o < rows; o++) {
            Arrays.fill(row, 0f);
            for (int k = 0; k < delta.rank(); k++) {
                float bk = delta.b()[o * delta.rank() + k];
                int aRow = k * columns;
                for (int i = 0; i < columns; i++) {
                    row[i] += bk * delta.a()[aRow + i];
                }
            }
            int offset = start + o * columns;
            for (int i = 0; i < columns; i++) {
                weight[offset + i] += (float) (row[i] * delta.scale());
            }
            if (delta.magnitude() != null) {
                double squares = 0;
                for (int i = 0; i < columns; i++) {
                    squares += (double) weight[offset + i] * weight[offset + i];
                }
                float factor = (float) (delta.magnitude()[o] / (float) Math.sqrt(squares));
                for (int i = 0; i < columns; i++) {
                    weight[offset + i] *= factor;
                }
            }
        }
    }
}
