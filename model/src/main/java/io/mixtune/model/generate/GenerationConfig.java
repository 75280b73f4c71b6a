package io.mixtune.model.generate;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.config.ModelConfig;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalDouble;
import java.util.OptionalInt;
import java.util.function.DoubleFunction;

/**
 * A model folder's {@code generation_config.json} as transformers reads it into {@code model.generation_config}: the ids
 * that end an answer (Llama 3 and Mistral v0.3 instruct models list their end-of-turn ids beside EOS) and the decoding
 * defaults {@code generate()} uses when the caller names none, each unset value taking
 * {@code GenerationConfig._get_default_generation_params}'s ({@link TokenSampler.Settings#DEFAULTS}).
 *
 * <p>Without the file: config.json's EOS ids (every one of a list, as transformers builds the file from config.json)
 * and transformers' defaults. A file without {@code eos_token_id} still stops at config.json's EOS ids, where
 * transformers 5.18 would not stop at all (its eos_token_id is then None: it takes none from config.json).
 *
 * @param eosTokenIds every id that ends an answer, never empty
 * @param defaults the decoding the file asks for
 * @param file the file read, or null when the folder has none
 * @param unusableSamplingValues by key, why a value of the file cannot be sampled with (transformers keeps such a
 *     value while decoding greedily and fails when it samples with it); {@link #defaults} holds the default instead
 */
public record GenerationConfig(List<Integer> eosTokenIds, TokenSampler.Settings defaults, Path file,
        Map<String, String> unusableSamplingValues) {
    public static final String FILE_NAME = "generation_config.json";

    public GenerationConfig {
        eosTokenIds = List.copyOf(eosTokenIds);
        unusableSamplingValues = Map.copyOf(unusableSamplingValues);
        if (eosTokenIds.isEmpty()) {
            throw new IllegalArgumentException("generation needs at least one EOS id");
        }
    }

    /**
     * @throws IllegalArgumentException naming the file and the key for a value transformers would refuse
     */
    public static GenerationConfig read(Path modelDir, ModelConfig config) {
        Path file = modelDir.resolve(FILE_NAME);
        if (!Files.isRegularFile(file)) {
            return new GenerationConfig(configEosTokenIds(modelDir, config), TokenSampler.Settings.DEFAULTS, null,
                    Map.of());
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
            eos.addAll(configEosTokenIds(modelDir, config));
        }
        TokenSampler.Settings fallback = TokenSampler.Settings.DEFAULTS;
        boolean doSample = root.hasNonNull("do_sample") ? bool(file, root, "do_sample") : fallback.doSample();
        double repetitionPenalty = root.hasNonNull("repetition_penalty") ? number(file, root, "repetition_penalty")
                : fallback.repetitionPenalty();
        try {
            fallback.withRepetitionPenalty(repetitionPenalty);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(file + ": repetition_penalty: " + e.getMessage());
        }
        // Sampling values are checked when sampling uses them, as transformers does: a greedy model's file may hold a
        // temperature of 0.
        Map<String, String> unusable = new LinkedHashMap<>();
        double temperature = sampling(file, root, "temperature", fallback.temperature(), unusable,
                value -> fallback.withTemperature(value));
        int topK = (int) sampling(file, root, "top_k", fallback.topK(), unusable, value -> {
            if (value != Math.rint(value) || Math.abs(value) > Integer.MAX_VALUE) {
                throw new IllegalArgumentException("must be an integer, got " + value);
            }
            return fallback.withTopK((int) value);
        });
        double topP = sampling(file, root, "top_p", fallback.topP(), unusable, value -> fallback.withTopP(value));
        double minP = sampling(file, root, "min_p", fallback.minP(), unusable, value -> fallback.withMinP(value));
        return new GenerationConfig(eos, new TokenSampler.Settings(doSample, temperature, topK, topP, minP,
                repetitionPenalty), file, unusable);
    }

    /**
     * The settings of a caller who sets some values (each empty one taken from this file, else transformers'
     * defaults), as {@code generate(**kwargs)} merges them over {@code model.generation_config}.
     *
     * @throws IllegalArgumentException naming the file and key of a value the file holds that sampling cannot use
     */
    public TokenSampler.Settings resolve(Optional<Boolean> doSample, OptionalDouble temperature, OptionalInt topK,
            OptionalDouble topP, OptionalDouble minP, OptionalDouble repetitionPenalty) {
        boolean sample = doSample.orElse(defaults.doSample());
        if (sample) {
            Map<String, Boolean> given = Map.of("temperature", temperature.isPresent(), "top_k", topK.isPresent(),
                    "top_p", topP.isPresent(), "min_p", minP.isPresent());
            for (Map.Entry<String, String> problem : unusableSamplingValues.entrySet()) {
                if (!given.get(problem.getKey())) {
                    throw new IllegalArgumentException(problem.getValue());
                }
            }
        }
        return new TokenSampler.Settings(sample, temperature.orElse(defaults.temperature()),
                topK.orElse(defaults.topK()), topP.orElse(defaults.topP()), minP.orElse(defaults.minP()),
                repetitionPenalty.orElse(defaults.repetitionPenalty()));
    }

    /** A sampling value of the file, or the default where it holds one sampling cannot use (noted in unusable). */
    private static double sampling(Path file, JsonNode root, String key, double fallback, Map<String, String> unusable,
            DoubleFunction<TokenSampler.Settings> check) {
        if (!root.hasNonNull(key)) {
            return fallback;
        }
        double value = number(file, root, key);
        try {
            check.apply(value);
            return value;
        } catch (IllegalArgumentException e) {
            unusable.put(key, file + ": " + key + " " + root.get(key) + " cannot be sampled with: " + e.getMessage()
                    + " (give the value as a flag, or decode greedily)");
            return fallback;
        }
    }

    /**
     * config.json's EOS ids: transformers builds a missing generation_config.json from config.json, so every id of a
     * list {@code eos_token_id} ends an answer (ModelConfig keeps the first, the one a sequence is closed with).
     */
    private static List<Integer> configEosTokenIds(Path modelDir, ModelConfig config) {
        for (int id : config.eosTokenIds()) {
            if (id < 0 || id >= config.vocabSize()) {
                throw new IllegalArgumentException(modelDir.resolve("config.json") + ": eos_token_id must be a token id"
                        + " in [0, " + config.vocabSize() + ") or a list of them, got " + config.eosTokenIds());
            }
        }
        return config.eosTokenIds();
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
}
