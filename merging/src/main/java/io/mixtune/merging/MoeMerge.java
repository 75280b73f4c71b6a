package io.mixtune.merging;

import ai.djl.Device;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.lora.adapter.AdapterMerge;
import io.mixtune.merging.MoeConfig.Expert;
import io.mixtune.merging.MoeConfig.GateMode;
import io.mixtune.merging.MoeConfig.ModelReference;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.PathOverlap;
import io.mixtune.model.checkpoint.StagingDirectory;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import io.mixtune.model.safetensors.TensorInfo;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code mixtune merge-moe}: mergekit-moe's Mixtral output (mergekit/moe/mixtral.py MixtralMoE.write_model) from
 * Mistral fine-tunes. Every tensor but the MLPs comes from base_model; expert j of every layer is expert j's MLP
 * (gate_proj as w1, down_proj as w2, up_proj as w3, in the Hub's per-expert layout); each layer's router
 * ({@code block_sparse_moe.gate}) is {@link MoeGates}'s rows. config.json is the base's with Mixtral's keys; the
 * tokenizer files and chat template are the base's. Every input is checked before anything is written, and the output
 * is written as OUT.tmp-* and renamed when complete ({@link StagedOutput}).
 */
public final class MoeMerge {
    private static final Pattern EXPERT = Pattern.compile(
            "model\\.layers\\.(\\d+)\\.block_sparse_moe\\.experts\\.(\\d+)\\.(w[123])\\.weight");
    private static final Pattern ROUTER = Pattern.compile("model\\.layers\\.(\\d+)\\.block_sparse_moe\\.gate\\.weight");
    /** Mixtral's names of a Mistral MLP's projections (mixtral.py: gate_proj w1, down_proj w2, up_proj w3). */
    private static final Map<String, String> SOURCE = Map.of("w1", "gate_proj", "w2", "down_proj", "w3", "up_proj");
    /** The flag mergekit-moe asks for when every expert is the same model. */
    public static final String ALL_SAME_FLAG = "--i-understand-this-is-not-useful-without-training";

    private MoeMerge() {}

    /**
     * @param force replace a non-empty out
     * @param seed seeds the random gate modes and noise_scale's noise (mergekit: torch's global generator)
     * @param allowAllSame build a mixture whose experts are all one model (to train it afterwards)
     * @param device where the hidden gate mode runs the base model
     */
    public record Options(boolean force, long seed, boolean allowAllSame, Device device, long maxShardBytes) {}

    /** What was written, and what {@code mixtune merge-moe} prints. */
    public record Report(Path out, GateMode gateMode, int experts, int expertsPerToken, int layers, DType dtype,
            List<Path> files, double seconds, List<String> lines) {}

    /**
     * @param configText the YAML as given, written beside the mixture as mergekit-moe does (null: none)
     */
    public static Report run(MoeConfig config, String configText, Path out, Options options) {
        long start = System.nanoTime();
        StagedOutput.requireWritable(out, options.force());
        List<ModelReference> inputs = new ArrayList<>();
        inputs.add(config.baseModel());
        config.experts().forEach(e -> inputs.add(e.sourceModel()));
        for (ModelReference input : inputs) {
            requireInput(input, out);
        }
        if (config.gateMode().usesPrompts() && !options.allowAllSame() && config.experts().size() > 1
                && config.experts().stream().allMatch(e -> e.sourceModel().sameAs(
                        config.experts().get(0).sourceModel()))) {
            throw new IllegalArgumentException("every expert is " + config.experts().get(0).sourceModel() + ": the"
                    + " mixture would cost more and give exactly that model's output; to train it afterwards pass "
                    + ALL_SAME_FLAG + " (or use gate_mode random)");
        }
        ModelReference base = config.baseModel();
        ModelConfig baseConfig = ModelConfig.read(base.model().resolve(CheckpointMerge.CONFIG));
        if (baseConfig.isMixtureOfExperts()) {
            throw new IllegalArgumentException(base + ": base_model is already a Mixtral ("
                    + baseConfig.numLocalExperts() + " experts); mergekit-moe builds a Mixtral from Mistral models");
        }
        for (Expert expert : config.experts()) {
            requireSameShapes(base, baseConfig, expert.sourceModel());
        }
        ObjectNode outJson = mixtralConfig(base.model(), baseConfig, config);
        ModelConfig outConfig = ModelConfig.fromJson(outJson);

        Map<ModelReference, AdapterMerge.Merged> readers = new LinkedHashMap<>();
        try {
            for (ModelReference input : inputs) {
                if (readers.keySet().stream().noneMatch(input::sameAs)) {
                    readers.put(input, AdapterMerge.Merged.open(input.model(), input.lora()));
                }
            }
            AdapterMerge.Merged baseReader = reader(readers, base);
            DType dtype = config.dtype() != null ? config.dtype()
                    : baseReader.base().info("model.embed_tokens.weight").dtype();
            for (Expert expert : config.experts()) {
                requireSameMlpShapes(base, baseReader, expert.sourceModel(), reader(readers, expert.sourceModel()),
                        baseConfig.numHiddenLayers());
            }
            MoeGates.Rows gates = gates(config, baseConfig, baseReader, out, options);
            List<TensorSpec> specs = new ArrayList<>();
            MistralCheckpoint.hubTensorShapes(outConfig).forEach((name, shape) -> specs.add(new TensorSpec(name, dtype,
                    shape)));
            try (StagedOutput staged = StagedOutput.create(out, options.force())) {
                List<Path> files = SafetensorsWriter.writeCheckpoint(staged.dir(), specs, options.maxShardBytes(),
                        spec -> tensor(spec.name(), config, readers, baseReader, gates, options.seed()));
                writeCompanions(base, outJson, dtype, configText, staged.dir());
                staged.commit();
                List<String> lines = new ArrayList<>();
                lines.add("merge-moe: " + config.experts().size() + " experts (" + config.expertsPerToken()
                        + " per token) x " + baseConfig.numHiddenLayers() + " layers, gate_mode "
                        + config.gateMode() + ", " + ModelConfig.torchDtypeName(dtype) + " -> " + out);
                int e = config.experts().size();
                List<Integer> degenerate = MoeGates.degenerateLayers(gates, e);
                if (!degenerate.isEmpty()) {
                    lines.add("note: " + (degenerate.size() == baseConfig.numHiddenLayers() ? "every layer has"
                            : "layers " + degenerate + " have") + " degenerate routing parameters (condition number"
                            + " above " + MoeGates.DEGENERATE_CONDITION + "): your prompts may be too similar, and one"
                            + " or more experts will be underused");
                }
                if ((e & (e - 1)) != 0) {
                    // mixtral.py's warning: llama.cpp's Mixtral loader needs a power of two
                    lines.add("note: " + e + " experts is not a power of two: llama.cpp will not load this model");
                }
                return new Report(out, config.gateMode(), e, config.expertsPerToken(), baseConfig.numHiddenLayers(),
                        dtype, files, (System.nanoTime() - start) / 1e9, lines);
            }
        } finally {
            readers.values().forEach(AdapterMerge.Merged::close);
        }
    }

    /** The router rows; the hidden mode runs the base (with its adapter folded in, into a temporary directory). */
    private static MoeGates.Rows gates(MoeConfig config, ModelConfig baseConfig, AdapterMerge.Merged baseReader,
            Path out, Options options) {
        int layers = baseConfig.numHiddenLayers();
        int hidden = baseConfig.hiddenSize();
        GateMode mode = config.gateMode();
        if (mode == GateMode.RANDOM || mode == GateMode.UNIFORM_RANDOM) {
            return MoeGates.random(layers, config.experts().size(), hidden, options.seed(),
                    mode == GateMode.UNIFORM_RANDOM);
        }
        ModelReference base = config.baseModel();
        try (TextTokenizer tokenizer = TextTokenizer.open(tokenizerDir(base), baseConfig.bosTokenId() == null
                ? TextTokenizer.NO_BOS : baseConfig.bosTokenId(), baseConfig.eosTokenId())) {
            var tokens = MoeGates.promptTokens(tokenizer, baseConfig.bosTokenId());
            requireIdsInVocabulary(config.experts(), tokens, baseConfig.vocabSize(), base);
            if (mode == GateMode.CHEAP_EMBED) {
                return MoeGates.cheapEmbed(config.experts(), baseReader.read("model.embed_tokens.weight"), layers,
                        hidden, tokens);
            }
            if (base.lora() == null) {
                return MoeGates.hidden(config.experts(), base.model(), options.device(), tokens);
            }
            Path folded = StagingDirectory.create(out, "base");
            try {
                AdapterMerge.merge(base.model(), base.lora(), folded, DType.F32, options.maxShardBytes());
                return MoeGates.hidden(config.experts(), folded, options.device(), tokens);
            } finally {
                try {
                    StagingDirectory.deleteRecursively(folded);
                } catch (IOException ignored) {
                    // an OUT.tmp-* directory is plainly not the output; the next merge-moe into OUT deletes it
                }
            }
        }
    }

    /** The data of one output tensor, float32. */
    private static float[] tensor(String name, MoeConfig config, Map<ModelReference, AdapterMerge.Merged> readers,
            AdapterMerge.Merged baseReader, MoeGates.Rows gates, long seed) {
        Matcher router = ROUTER.matcher(name);
        if (router.matches()) {
            return gates.perLayer()[Integer.parseInt(router.group(1))];
        }
        Matcher expertName = EXPERT.matcher(name);
        if (!expertName.matches()) {
            return baseReader.read(name);
        }
        Expert expert = config.experts().get(Integer.parseInt(expertName.group(2)));
        String projection = expertName.group(3);
        float[] weight = reader(readers, expert.sourceModel()).read("model.layers." + expertName.group(1) + ".mlp."
                + SOURCE.get(projection) + ".weight");
        // common.py noise_and_scale: noise on every expert tensor first, then residual_scale on down_proj (w2).
        if (expert.noiseScale() != null && expert.noiseScale() > 0) {
            SplittableRandom random = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + name.hashCode());
            for (int i = 0; i < weight.length; i++) {
                weight[i] = (float) (weight[i] + random.nextGaussian() * expert.noiseScale());
            }
        }
        if (projection.equals("w2") && expert.residualScale() != null) {
            for (int i = 0; i < weight.length; i++) {
                weight[i] = (float) (weight[i] * expert.residualScale());
            }
        }
        return weight;
    }

    /**
     * The base's config.json as a Mixtral's (mixtral.py _generate_config): MixtralConfig's keys added, the experts
     * counted, no sliding window; the rest as the base has it.
     */
    private static ObjectNode mixtralConfig(Path base, ModelConfig baseConfig, MoeConfig config) {
        ObjectNode json = (ObjectNode) CheckpointMerge.readConfig(base).deepCopy();
        // mergekit writes MixtralConfig(**base_config.to_dict()): the base's values with MistralConfig's defaults
        // resolved. Where MixtralConfig's defaults differ (rms_norm_eps 1e-5 for 1e-6, rope_theta 1e6 for 10000), a
        // key the base leaves out is written with the value the base is read with, or the mixture would change it.
        if (!json.hasNonNull("rms_norm_eps")) {
            json.put("rms_norm_eps", baseConfig.rmsNormEps());
        }
        if (!json.path("rope_parameters").hasNonNull("rope_theta") && !json.hasNonNull("rope_theta")) {
            if (json.path("rope_parameters").isObject()) {
                ((ObjectNode) json.get("rope_parameters")).put("rope_theta", baseConfig.ropeTheta());
            } else {
                json.put("rope_theta", baseConfig.ropeTheta());
            }
        }
        json.remove(List.of("_name_or_path", "transformers_version"));
        json.putArray("architectures").add("MixtralForCausalLM");
        json.put("model_type", "mixtral");
        json.put("num_local_experts", config.experts().size());
        json.put("num_experts_per_tok", config.expertsPerToken());
        json.putNull("sliding_window");
        // MixtralConfig's defaults, which transformers writes out
        if (!json.has("router_aux_loss_coef")) {
            json.put("router_aux_loss_coef", 0.001);
        }
        if (!json.has("output_router_logits")) {
            json.put("output_router_logits", false);
        }
        if (!json.has("router_jitter_noise")) {
            json.put("router_jitter_noise", 0.0);
        }
        return json;
    }

    private static void writeCompanions(ModelReference base, ObjectNode outJson, DType dtype, String configText,
            Path dir) {
        try {
            Path configFile = dir.resolve(CheckpointMerge.CONFIG);
            new ObjectMapper().writerWithDefaultPrettyPrinter().writeValue(configFile.toFile(), outJson);
            ModelConfig.recordDtype(configFile, dtype);
            for (String file : AdapterMerge.MODEL_FILES) {
                if (!file.equals(CheckpointMerge.CONFIG) && Files.isRegularFile(base.model().resolve(file))) {
                    Files.copy(base.model().resolve(file), dir.resolve(file));
                }
            }
            for (Map.Entry<String, Path> file : AdapterMerge.tokenizerSources(tokenizerDirs(base)).entrySet()) {
                Files.copy(file.getValue().resolve(file.getKey()), dir.resolve(file.getKey()));
            }
            if (configText != null) {
                Files.writeString(dir.resolve(MoeYaml.WRITTEN_FILE), configText);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write the mixture's files into " + dir + ": " + e.getMessage(), e);
        }
    }

    /**
     * Whose tokenizer files the mixture carries and the prompts are tokenized with: the base's; for a BASE+ADAPTER
     * the adapter's first (mixtune's training writes its tokenizer with the chat template it trained with), as
     * {@code mixtune merge-adapter} picks them.
     */
    private static List<Path> tokenizerDirs(ModelReference base) {
        return base.lora() == null ? List.of(base.model()) : List.of(base.lora(), base.model());
    }

    private static Path tokenizerDir(ModelReference base) {
        return tokenizerDirs(base).stream().filter(d -> Files.isRegularFile(d.resolve("tokenizer.json"))).findFirst()
                .orElseThrow(() -> new IllegalArgumentException(base + ": no tokenizer.json, which the gate modes"
                        + " hidden and cheap_embed tokenize the prompts with (use gate_mode random, or add it)"));
    }

    /**
     * Every prompt's ids have an embedding row: a token added to the tokenizer (a ChatML token) of a model never
     * resized for it would index past the embedding (mergekit: one_hot's or the embedding's index error).
     */
    private static void requireIdsInVocabulary(List<Expert> experts, java.util.function.Function<String, long[]> tokens,
            int vocabSize, ModelReference base) {
        for (Expert expert : experts) {
            for (List<String> prompts : List.of(expert.positivePrompts(), expert.negativePrompts())) {
                for (String prompt : prompts) {
                    for (long id : tokens.apply(prompt)) {
                        if (id < 0 || id >= vocabSize) {
                            throw new IllegalArgumentException("expert " + expert.sourceModel() + ": prompt '" + prompt
                                    + "' holds token id " + id + ", past base_model " + base + "'s vocab_size "
                                    + vocabSize + " (its tokenizer has tokens its embedding has no row for): remove"
                                    + " the token from the prompt, or resize the model's embeddings for it");
                        }
                    }
                }
            }
        }
    }

    private static AdapterMerge.Merged reader(Map<ModelReference, AdapterMerge.Merged> readers, ModelReference ref) {
        return readers.entrySet().stream().filter(e -> e.getKey().sameAs(ref)).findFirst().orElseThrow().getValue();
    }

    private static void requireInput(ModelReference input, Path out) {
        for (Path dir : input.lora() == null ? List.of(input.model()) : List.of(input.model(), input.lora())) {
            if (!Files.isDirectory(dir)) {
                throw new IllegalArgumentException(input + ": " + dir + " is no directory");
            }
            String problem = PathOverlap.problem("OUT_DIR", out, dir);
            if (problem != null) {
                throw new IllegalArgumentException(problem);
            }
        }
        if (!Files.isRegularFile(input.model().resolve(CheckpointMerge.CONFIG))) {
            throw new IllegalArgumentException(input + ": " + input.model() + " has no config.json: a model directory"
                    + (input.lora() == null && Files.isRegularFile(input.model().resolve("adapter_config.json"))
                    ? " (this is a PEFT adapter: write BASE+" + input.model() + ")" : " is expected"));
        }
        if (input.lora() != null && !Files.isRegularFile(input.lora().resolve("adapter_config.json"))) {
            throw new IllegalArgumentException(input + ": " + input.lora() + " has no adapter_config.json: after"
                    + " '+' comes a PEFT LoRA adapter");
        }
    }

    private static void requireSameShapes(ModelReference base, ModelConfig baseConfig, ModelReference expert) {
        ModelConfig c = ModelConfig.read(expert.model().resolve(CheckpointMerge.CONFIG));
        int[] a = {baseConfig.hiddenSize(), baseConfig.intermediateSize(), baseConfig.numHiddenLayers()};
        int[] b = {c.hiddenSize(), c.intermediateSize(), c.numHiddenLayers()};
        if (c.isMixtureOfExperts() || !Arrays.equals(a, b)) {
            throw new IllegalArgumentException("expert " + expert + " (hidden_size, intermediate_size,"
                    + " num_hidden_layers " + Arrays.toString(b) + (c.isMixtureOfExperts() ? ", a Mixtral" : "")
                    + ") does not fit base_model " + base + " (" + Arrays.toString(a) + "): every expert must be a"
                    + " Mistral of the base's shapes");
        }
    }

    private static void requireSameMlpShapes(ModelReference base, AdapterMerge.Merged baseReader, ModelReference expert,
            AdapterMerge.Merged expertReader, int layers) {
        for (int l = 0; l < layers; l++) {
            for (String projection : SOURCE.values()) {
                String name = "model.layers." + l + ".mlp." + projection + ".weight";
                if (!expertReader.base().contains(name)) {
                    throw new IllegalArgumentException("expert " + expert + " has no " + name + ", which base_model "
                            + base + " has: every expert must be a Mistral of the base's shapes");
                }
                TensorInfo mine = expertReader.base().info(name);
                TensorInfo theirs = baseReader.base().info(name);
                if (!Arrays.equals(mine.shape(), theirs.shape())) {
                    throw new IllegalArgumentException(name + " is " + Arrays.toString(mine.shape()) + " in expert "
                            + expert + " but " + Arrays.toString(theirs.shape()) + " in base_model " + base
                            + ": every expert must be a Mistral of the base's shapes");
                }
            }
        }
    }
}
