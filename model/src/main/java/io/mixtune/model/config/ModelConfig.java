package io.mixtune.model.config;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * The architecture of a Mistral or Mixtral checkpoint, read from its Hugging Face {@code config.json}.
 *
 * <p>A Mixtral is a Mistral whose MLP is a sparse mixture of experts: {@code numLocalExperts > 0}.
 *
 * @param slidingWindow attention window W (query i sees key j iff i - W < j <= i), or null for full causal attention
 * @param bosTokenId the id samples and prompts begin with, or null where there is none: config.json's null with a
 *     tokenizer that names no BOS token it has (transformers loads such a model; its chat template renders no BOS).
 *     What tokenizes then writes no BOS where transformers writes none (TextTokenizer.NO_BOS), and refuses a
 *     bos_token tokenizer.json lacks ({@link #bosTokenUnknownToTokenizer}, {@link #noBosToken} naming the files)
 */
public record ModelConfig(
        ModelType modelType,
        int hiddenSize,
        int intermediateSize,
        int numHiddenLayers,
        int numAttentionHeads,
        int numKeyValueHeads,
        int headDim,
        int vocabSize,
        double rmsNormEps,
        double ropeTheta,
        Integer slidingWindow,
        int maxPositionEmbeddings,
        boolean tieWordEmbeddings,
        int numLocalExperts,
        int numExpertsPerTok,
        double routerAuxLossCoef,
        Integer bosTokenId,
        int eosTokenId,
        List<Integer> eosTokenIds) {

    /** A config with one EOS id. */
    public ModelConfig(ModelType modelType, int hiddenSize, int intermediateSize, int numHiddenLayers,
            int numAttentionHeads, int numKeyValueHeads, int headDim, int vocabSize, double rmsNormEps,
            double ropeTheta, Integer slidingWindow, int maxPositionEmbeddings, boolean tieWordEmbeddings,
            int numLocalExperts, int numExpertsPerTok, double routerAuxLossCoef, Integer bosTokenId, int eosTokenId) {
        this(modelType, hiddenSize, intermediateSize, numHiddenLayers, numAttentionHeads, numKeyValueHeads, headDim,
                vocabSize, rmsNormEps, ropeTheta, slidingWindow, maxPositionEmbeddings, tieWordEmbeddings,
                numLocalExperts, numExpertsPerTok, routerAuxLossCoef, bosTokenId, eosTokenId, List.of(eosTokenId));
    }

    /** The same model with {@code layers} decoder layers: real per-layer shapes at a size a device check can hold. */
    public ModelConfig withHiddenLayers(int layers) {
        return new ModelConfig(modelType, hiddenSize, intermediateSize, layers, numAttentionHeads, numKeyValueHeads,
                headDim, vocabSize, rmsNormEps, ropeTheta, slidingWindow, maxPositionEmbeddings, tieWordEmbeddings,
                numLocalExperts, numExpertsPerTok, routerAuxLossCoef, bosTokenId, eosTokenId, eosTokenIds);
    }

    public enum ModelType {
        MISTRAL, MIXTRAL;

        public String hfName() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

    /**
     * @param eosTokenId the EOS a sequence is closed with: the first of {@code eosTokenIds}
     * @param eosTokenIds config.json's {@code eos_token_id}, every id of a list (transformers builds a missing
     *     generation_config.json from it, so each ends an answer); ids after the first are checked where generation
     *     uses them ({@code GenerationConfig})
     */
    public ModelConfig {
        eosTokenIds = List.copyOf(eosTokenIds);
        if (eosTokenIds.isEmpty() || eosTokenIds.get(0) != eosTokenId) {
            throw new IllegalArgumentException("eos_token_id " + eosTokenId + " must be the first of the EOS ids "
                    + eosTokenIds);
        }
        requirePositive("hidden_size", hiddenSize);
        requirePositive("intermediate_size", intermediateSize);
        requirePositive("num_hidden_layers", numHiddenLayers);
        requirePositive("num_attention_heads", numAttentionHeads);
        requirePositive("num_key_value_heads", numKeyValueHeads);
        requirePositive("head_dim", headDim);
        requirePositive("vocab_size", vocabSize);
        requirePositive("max_position_embeddings", maxPositionEmbeddings);
        if (numAttentionHeads % numKeyValueHeads != 0) {
            throw new IllegalArgumentException("num_attention_heads (" + numAttentionHeads
                    + ") must be a multiple of num_key_value_heads (" + numKeyValueHeads + ")");
        }
        if (headDim % 2 != 0) {
            throw new IllegalArgumentException("head_dim must be even for rotary embeddings, got " + headDim);
        }
        if (!(rmsNormEps > 0)) {
            throw new IllegalArgumentException("rms_norm_eps must be > 0, got " + rmsNormEps);
        }
        if (!(ropeTheta > 0)) {
            throw new IllegalArgumentException("rope_theta must be > 0, got " + ropeTheta);
        }
        if (slidingWindow != null && slidingWindow <= 0) {
            throw new IllegalArgumentException("sliding_window must be a positive integer or null, got " + slidingWindow);
        }
        if (modelType == ModelType.MIXTRAL) {
            requirePositive("num_local_experts", numLocalExperts);
            requirePositive("num_experts_per_tok", numExpertsPerTok);
            if (numExpertsPerTok > numLocalExperts) {
                throw new IllegalArgumentException("num_experts_per_tok (" + numExpertsPerTok
                        + ") must not exceed num_local_experts (" + numLocalExperts + ")");
            }
        } else if (numLocalExperts != 0) {
            throw new IllegalArgumentException("a mistral model has no experts, got num_local_experts " + numLocalExperts);
        }
        if (bosTokenId != null && (bosTokenId < 0 || bosTokenId >= vocabSize) || eosTokenId < 0
                || eosTokenId >= vocabSize) {
            throw new IllegalArgumentException("bos_token_id " + bosTokenId + " and eos_token_id " + eosTokenId
                    + " must lie in [0, vocab_size=" + vocabSize + ")");
        }
    }

    public boolean isMixtureOfExperts() {
        return modelType == ModelType.MIXTRAL;
    }

    /** Query heads that share one key/value head (grouped-query attention). */
    public int queriesPerKeyValueHead() {
        return numAttentionHeads / numKeyValueHeads;
    }

    /** Parameters of the full-precision model, counted from the shapes (no weights needed). */
    public long parameterCount() {
        long h = hiddenSize;
        long attention = h * numAttentionHeads * headDim * 2 + h * numKeyValueHeads * headDim * 2;
        long mlp = 3 * h * intermediateSize;
        long feedForward = isMixtureOfExperts() ? numLocalExperts * mlp + h * numLocalExperts : mlp;
        long perLayer = attention + feedForward + 2 * h;
        long embeddings = (long) vocabSize * h * (tieWordEmbeddings ? 1 : 2);
        return numHiddenLayers * perLayer + embeddings + h;
    }

    /**
     * The config.json transformers writes for this architecture (4.x key spellings, which 5.x also reads).
     *
     * @param torchDtype the dtype the weights are stored in: "float32", "float16" or "bfloat16"
     */
    public ObjectNode toJson(String torchDtype) {
        ObjectNode json = new ObjectMapper().createObjectNode();
        json.putArray("architectures").add(isMixtureOfExperts() ? "MixtralForCausalLM" : "MistralForCausalLM");
        json.put("model_type", modelType.hfName());
        json.put("hidden_size", hiddenSize);
        json.put("intermediate_size", intermediateSize);
        json.put("num_hidden_layers", numHiddenLayers);
        json.put("num_attention_heads", numAttentionHeads);
        json.put("num_key_value_heads", numKeyValueHeads);
        json.put("head_dim", headDim);
        json.put("vocab_size", vocabSize);
        json.put("rms_norm_eps", rmsNormEps);
        json.put("rope_theta", ropeTheta);
        if (slidingWindow == null) {
            json.putNull("sliding_window");
        } else {
            json.put("sliding_window", slidingWindow);
        }
        json.put("max_position_embeddings", maxPositionEmbeddings);
        json.put("tie_word_embeddings", tieWordEmbeddings);
        if (isMixtureOfExperts()) {
            json.put("num_local_experts", numLocalExperts);
            json.put("num_experts_per_tok", numExpertsPerTok);
            json.put("router_aux_loss_coef", routerAuxLossCoef);
            json.put("output_router_logits", false);
            json.put("router_jitter_noise", 0.0);
        }
        json.put("hidden_act", "silu");
        json.put("initializer_range", 0.02);
        json.put("attention_dropout", 0.0);
        json.put("bos_token_id", bosTokenId); // null as read: transformers keeps it
        if (eosTokenIds.size() == 1) {
            json.put("eos_token_id", eosTokenId);
        } else {
            eosTokenIds.forEach(json.putArray("eos_token_id")::add);
        }
        json.put("torch_dtype", torchDtype);
        json.put("use_cache", true);
        return json;
    }

    /**
     * Rewrites the dtype a config.json names for the weights after they were converted (transformers 4 spells the
     * key torch_dtype, 5 dtype and reads dtype first; every spelling already in the file is rewritten, torch_dtype
     * where there is none).
     */
    public static void recordDtype(Path configJson, DType dtype) throws IOException {
        ObjectMapper json = new ObjectMapper();
        ObjectNode config = (ObjectNode) json.readTree(configJson.toFile());
        if (config.has("dtype")) {
            config.put("dtype", torchDtypeName(dtype));
        }
        if (config.has("torch_dtype") || !config.has("dtype")) {
            config.put("torch_dtype", torchDtypeName(dtype));
        }
        json.writerWithDefaultPrettyPrinter().writeValue(configJson.toFile(), config);
    }

    /** The name config.json (and mergekit) give a weight dtype: float32, float16 or bfloat16. */
    public static String torchDtypeName(DType dtype) {
        return switch (dtype) {
            case F32 -> "float32";
            case F16 -> "float16";
            case BF16 -> "bfloat16";
            default -> throw new IllegalArgumentException("weights are stored as F32, F16 or BF16, not " + dtype);
        };
    }

    public static ModelConfig read(Path configJson) {
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(Files.readString(configJson));
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException(configJson + ": no config.json: a Hugging Face model directory needs one");
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(configJson + ": not valid JSON: " + e.getOriginalMessage());
        } catch (IOException e) {
            throw new IllegalArgumentException(configJson + ": cannot be read: " + e.getMessage());
        }
        if (!(root instanceof ObjectNode)) {
            throw new IllegalArgumentException(configJson + ": expected a JSON object");
        }
        if (root.has("bos_token_id") && root.get("bos_token_id").isNull()) {
            ((ObjectNode) root).put("bos_token_id", tokenizerBos(configJson).id());
        }
        try {
            return fromJson(root);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(configJson + ": " + e.getMessage(), e);
        }
    }

    /**
     * Why a config.json read with no BOS id has none, for a command that needs one to name both files: "CONFIG:
     * bos_token_id is null and TOKENIZER_CONFIG sets bos_token to null", or "... and TOKENIZER has no token ...".
     */
    public static String noBosToken(Path configJson) {
        return tokenizerBos(configJson).missing();
    }

    /**
     * Whether a config.json read with no BOS id names a bos_token its tokenizer.json lacks (rather than none):
     * transformers 5.18 adds such a token past the vocabulary (a new id, {@code len(tokenizer)}), whose embedding row
     * the model does not have.
     */
    public static boolean bosTokenUnknownToTokenizer(Path configJson) {
        return tokenizerBos(configJson).unknown();
    }

    /** The tokenizer's BOS: its id, or null and why there is none (unknown: a bos_token tokenizer.json lacks). */
    private record TokenizerBos(Long id, String missing, boolean unknown) {
        TokenizerBos(Long id, String missing) {
            this(id, missing, false);
        }
    }

    /**
     * The BOS for a config.json whose {@code bos_token_id} is null. transformers 5.18 keeps the null in the config
     * and its chat templates begin with the tokenizer's BOS (tokenizer_config.json's {@code bos_token}, its id in
     * tokenizer.json), with nothing where bos_token is null; mixtune, whose samples and prompts take the id from the
     * config, takes that same token, and no id where the tokenizer names none it has (bos_token null, or a token
     * tokenizer.json lacks, which transformers would add past the model's vocabulary). With no tokenizer.json beside
     * it, the bundled Mistral tokenizer is the one in use, whose {@code <s>} is 1 (MistralConfig's default, what a
     * config without the key gets).
     */
    private static TokenizerBos tokenizerBos(Path configJson) {
        Path dir = configJson.toAbsolutePath().getParent();
        Path tokenizerJson = dir.resolve("tokenizer.json");
        if (!Files.isRegularFile(tokenizerJson)) {
            return new TokenizerBos(1L, null);
        }
        Path tokenizerConfig = dir.resolve("tokenizer_config.json");
        String bos = "<s>"; // a tokenizer_config.json that names no bos_token: Mistral's, as the chat templates assume
        try {
            JsonNode named = Files.isRegularFile(tokenizerConfig)
                    ? new ObjectMapper().readTree(tokenizerConfig.toFile()).path("bos_token") : null;
            if (named != null && named.isNull()) {
                return new TokenizerBos(null, configJson + ": bos_token_id is null and " + tokenizerConfig
                        + " sets bos_token to null");
            }
            if (named != null && named.isTextual()) {
                bos = named.asText();
            } else if (named != null && named.path("content").isTextual()) {
                bos = named.path("content").asText();
            }
            Long id = TextTokenizer.vocabulary(Files.readAllBytes(tokenizerJson), tokenizerJson.toString()).get(bos);
            return new TokenizerBos(id, id != null ? null : configJson + ": bos_token_id is null and " + tokenizerJson
                    + " has no token \"" + bos + "\" (the bos_token" + (named == null || named.isMissingNode() ? ""
                    : " of " + tokenizerConfig) + ")", id == null);
        } catch (IOException e) {
            throw new IllegalArgumentException(configJson + ": bos_token_id is null and the tokenizer beside it cannot "
                    + "be read for its BOS token: " + e.getMessage(), e);
        }
    }

    /**
     * Reads the keys transformers writes for {@code model_type} mistral and mixtral (4.x and 5.x spellings). A key
     * left out takes MistralConfig's or MixtralConfig's default (transformers 5.18), which differ: a Mistral without
     * {@code sliding_window} has a window of 4096 (Mistral-7B v0.1's), a Mixtral none; a Mixtral's rope_theta is 1e6
     * and its rms_norm_eps 1e-5. The shapes (hidden, intermediate, layers, heads, vocab) have no default here: a file
     * without them is not a checkpoint's. A list {@code eos_token_id} gives its first id as the EOS.
     */
    public static ModelConfig fromJson(JsonNode root) {
        String type = root.path("model_type").asText("");
        ModelType modelType = switch (type) {
            case "mistral" -> ModelType.MISTRAL;
            case "mixtral" -> ModelType.MIXTRAL;
            case "" -> throw new IllegalArgumentException("missing key model_type: expected \"mistral\" or \"mixtral\"");
            default -> throw new IllegalArgumentException("model_type \"" + type
                    + "\" is not supported: mixtune runs \"mistral\" and \"mixtral\"");
        };
        JsonNode quantization = root.path("quantization_config");
        if (quantization.isObject()) {
            throw new IllegalArgumentException("quantization_config (quant_method \""
                    + quantization.path("quant_method").asText("?") + "\") says the weights are stored pre-quantized,"
                    + " which mixtune does not read: use the full-precision (F32, F16 or BF16) checkpoint they were"
                    + " made from (QLoRA quantizes it to NF4 while it loads)");
        }
        String activation = root.path("hidden_act").asText("silu");
        if (!activation.equals("silu")) {
            throw new IllegalArgumentException("hidden_act \"" + activation + "\" is not supported: mixtune's MLP is"
                    + " SwiGLU, \"silu\" (every Mistral and Mixtral checkpoint's)");
        }
        boolean moe = modelType == ModelType.MIXTRAL;
        int hidden = requiredInt(root, "hidden_size");
        int heads = requiredInt(root, "num_attention_heads");
        int headDim = root.hasNonNull("head_dim") ? intValue(root, "head_dim") : hidden / heads;
        // transformers' dataclass default is 8 for a missing key; an explicit null means one kv head per query head.
        int keyValueHeads = !root.has("num_key_value_heads") ? 8
                : root.get("num_key_value_heads").isNull() ? heads : intValue(root, "num_key_value_heads");
        Integer slidingWindow = !root.has("sliding_window") ? (moe ? null : Integer.valueOf(4096))
                : root.get("sliding_window").isNull() ? null : Integer.valueOf(intValue(root, "sliding_window"));
        List<Integer> eosTokenIds = eosTokenIds(root);
        return new ModelConfig(
                modelType,
                hidden,
                requiredInt(root, "intermediate_size"),
                requiredInt(root, "num_hidden_layers"),
                heads,
                keyValueHeads,
                headDim,
                requiredInt(root, "vocab_size"),
                doubleOr(root, "rms_norm_eps", moe ? 1e-5 : 1e-6),
                ropeTheta(root, moe ? 1e6 : 10000.0),
                slidingWindow,
                root.hasNonNull("max_position_embeddings") ? intValue(root, "max_position_embeddings") : 4096 * 32,
                root.path("tie_word_embeddings").asBoolean(false),
                moe ? intOr(root, "num_local_experts", 8) : 0,
                moe ? intOr(root, "num_experts_per_tok", 2) : 0,
                moe ? doubleOr(root, "router_aux_loss_coef", 0.001) : 0.0,
                root.path("bos_token_id").isNull() ? null : intOr(root, "bos_token_id", 1),
                eosTokenIds.get(0),
                eosTokenIds);
    }

    /** transformers allows a list of EOS ids; the first is the one a sequence ends with. */
    private static List<Integer> eosTokenIds(JsonNode root) {
        JsonNode eos = root.path("eos_token_id");
        if (!eos.isArray()) {
            return List.of(intOr(root, "eos_token_id", 2));
        }
        if (eos.isEmpty()) {
            throw new IllegalArgumentException("key eos_token_id is an empty list: expected a token id or a list of them");
        }
        List<Integer> ids = new ArrayList<>();
        for (JsonNode id : eos) {
            if (!id.isIntegralNumber() || !id.canConvertToInt()) {
                throw new IllegalArgumentException("key eos_token_id must hold integers, got " + eos);
            }
            ids.add(id.intValue());
        }
        return ids;
    }

    /** transformers 4 writes {@code rope_theta}; transformers 5 writes {@code rope_parameters: {rope_type, rope_theta}}. */
    private static double ropeTheta(JsonNode root, double defaultTheta) {
        JsonNode parameters = root.path("rope_parameters");
        if (parameters.isObject()) {
            String ropeType = parameters.path("rope_type").asText("default");
            if (!ropeType.equals("default")) {
                throw new IllegalArgumentException("rope_parameters.rope_type \"" + ropeType
                        + "\" is not supported: mixtune implements the default rotary embedding");
            }
            if (parameters.hasNonNull("rope_theta")) {
                return doubleValue(parameters, "rope_theta", "rope_parameters.rope_theta");
            }
        }
        JsonNode scaling = root.path("rope_scaling");
        if (scaling.isObject() && !scaling.path("rope_type").asText(scaling.path("type").asText("default")).equals("default")) {
            throw new IllegalArgumentException("rope_scaling " + scaling + " is not supported: mixtune implements the default rotary embedding");
        }
        return doubleOr(root, "rope_theta", defaultTheta);
    }

    private static void requirePositive(String key, int value) {
        if (value <= 0) {
            throw new IllegalArgumentException(key + " must be a positive integer, got " + value);
        }
    }

    private static int requiredInt(JsonNode root, String key) {
        if (!root.hasNonNull(key)) {
            throw new IllegalArgumentException("missing key " + key + ": expected an integer");
        }
        return intValue(root, key);
    }

    private static int intValue(JsonNode root, String key) {
        JsonNode node = root.get(key);
        if (!node.isIntegralNumber() || !node.canConvertToInt()) {
            throw new IllegalArgumentException("key " + key + " must be an integer, got " + node);
        }
        return node.intValue();
    }

    private static int intOr(JsonNode root, String key, int fallback) {
        return root.hasNonNull(key) ? intValue(root, key) : fallback;
    }

    private static double doubleOr(JsonNode root, String key, double fallback) {
        return root.hasNonNull(key) ? doubleValue(root, key, key) : fallback;
    }

    private static double doubleValue(JsonNode root, String key, String label) {
        JsonNode node = root.get(key);
        if (!node.isNumber()) {
            throw new IllegalArgumentException("key " + label + " must be a number, got " + node);
        }
        return node.doubleValue();
    }
}
