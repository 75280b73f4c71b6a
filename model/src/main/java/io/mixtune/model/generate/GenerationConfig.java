package io.mixtune.model.generate;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.config.ModelConfig;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * A model folder's {@code generation_config.json} as transformers reads it into {@code model.generation_config}: the ids
 * that end an answer (Llama 3 and Mistral v0.3 instruct models list their end-of-turn ids beside EOS) and the decoding
 * defaults {@code generate()} uses when the caller names none, each unset value taking
 * {@code GenerationConfig._get_default_generation_params}'s ({@link TokenSampler.Settings#DEFAULTS}).
 *
 * <p>Without the file: config.json's EOS and transformers' defaults. A file without {@code eos_token_id} still stops
 * at config.json's EOS, where transformers 5.18 would not stop at all (it takes no EOS from config.json then).
 *
 * @param eosTokenIds every id that ends an answer, never empty
 * @param defaults the decoding the file asks for
 * @param file the file read, or null when the folder has none
 */
public record GenerationConfig(List<Integer> eosTokenIds, TokenSampler.Settings defaults, Path file) {
    public static final String FILE_NAME = "generation_config.json";

    public GenerationConfig {
        eosTokenIds = List.copyOf(eosTokenIds);
        if (eosTokenIds.isEmpty()) {
            throw new IllegalArgumentException("generation needs at least one EOS id");
        }
    }

    /** config.json's EOS and transformers' defaults: what a folder without generation_config.json gets. */
    public static GenerationConfig of(ModelConfig config) {
        return new GenerationConfig(List.of(config.eosTokenId()), TokenSampler.Settings.DEFAULTS, null);
    }

    /**
     * @throws IllegalArgumentException naming the file and the key for a value transformers would refuse
     */
    public static GenerationConfig read(Path modelDir, ModelConfig config) {
        Path file = modelDir.resolve(FILE_NAME);
        if (!Files.isRegularFile(file)) {
            return of(config);
        }
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(Files.readString(file));
        } catch (IOException e) {
            throw new IllegalArgumentException(file + ": not readable JSON: " + e.getMessage());
        }
        if (!root.isObject()) {
            throw new IllegalArgumentException(file + ": expected a JSON object, got " + root.getNodeType());
        }
        List<Integer> eos = new ArrayList<>();
        JsonNode eosNode = root.path("eos_token_id");
        if (eosNode.isArray()) {
            eosNode.forEach(id -> eos.add(tokenId(file, id, config)));
        } else if (!eosNode.isMissingNode() && !eosNode.isNull()) {
            eos.add(tokenId(file, eosNode, config));
        }
        if (eos.isEmpty()) {
            eos.add(config.eosTokenId());
        }
        TokenSampler.Settings fallback = TokenSampler.Settings.DEFAULTS;
        try {
            TokenSampler.Settings defaults = new TokenSampler.Settings(
                    root.hasNonNull("do_sample") ? bool(file, root, "do_sample") : fallback.doSample(),
                    root.hasNonNull("temperature") ? number(file, root, "temperature") : fallback.temperature(),
                    root.hasNonNull("top_k") ? integer(file, root, "top_k") : fallback.topK(),
                    root.hasNonNull("top_p") ? number(file, root, "top_p") : fallback.topP(),
                    root.hasNonNull("min_p") ? number(file, root, "min_p") : fallback.minP(),
                    root.hasNonNull("repetition_penalty") ? number(file, root, "repetition_penalty")
                            : fallback.repetitionPenalty());
            return new GenerationConfig(eos, defaults, file);
        } catch (IllegalArgumentException e) {
            if (e.getMessage().startsWith(file.toString())) {
                throw e;
            }
            throw new IllegalArgumentException(file + ": " + e.getMessage());
        }
    }

    private static int tokenId(Path file, JsonNode node, ModelConfig config) {
        if (!node.canConvertToInt() || !node.isIntegralNumber() || node.intValue() < 0
                || node.intValue() >= config.vocabSize()) {
            throw new IllegalArgumentException(file + ": eos_token_id must be a token id in [0, " + config.vocabSize()
                    + ") or a list of them, got " + node);
        }
        return node.intValue();
    }

    private static boolean bool(Path file, JsonNode root, String key) {
        if (!root.get(key).isBoolean()) {
            throw new IllegalArgumentException(file + ": " + key + " must be true or false, got " + root.get(key));
        }
        return root.get(key).booleanValue();
    }

    private static double number(Path file, JsonNode root, String key) {
        if (!root.get(key).isNumber()) {
            throw new IllegalArgumentException(file + ": " + key + " must be a number, got " + root.get(key));
        }
        return root.get(key).doubleValue();
    }

    private static int integer(Path file, JsonNode root, String key) {
        if (!root.get(key).isIntegralNumber() || !root.get(key).canConvertToInt()) {
            throw new IllegalArgumentException(file + ": " + key + " must be an integer, got " + root.get(key));
        }
        return root.get(key).intValue();
    }
}
