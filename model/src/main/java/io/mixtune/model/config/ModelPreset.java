package io.mixtune.model.config;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.util.List;

/**
 * The model shapes shipped in {@code configs/models/} (packed into the jar as resources): tiny ones to materialise for
 * tests and the quickstart, real ones (mistral-7b, mixtral-8x7b) for memory plans.
 */
public final class ModelPreset {
    public static final List<String> NAMES = List.of("tiny-mistral", "tiny-mixtral", "mistral-1b", "mistral-7b", "mixtral-8x7b");

    /** The tokenizer shipped in {@code configs/tokenizer/mistral-v1/}: Mistral's and Mixtral's v1 vocabulary. */
    public static final String MISTRAL_V1_TOKENIZER = "configs/tokenizer/mistral-v1/tokenizer.json";
    public static final int MISTRAL_V1_VOCAB_SIZE = 32000;

    private ModelPreset() {}

    public static ModelConfig load(String name) {
        String resource = "configs/models/" + name + ".json";
        try (InputStream in = ModelPreset.class.getClassLoader().getResourceAsStream(resource)) {
            if (in == null) {
                throw new IllegalArgumentException("no model preset named \"" + name + "\": expected one of " + NAMES);
            }
            return ModelConfig.fromJson(new ObjectMapper().readTree(in));
        } catch (IOException e) {
            throw new IllegalStateException("preset " + resource + " cannot be read: " + e.getMessage(), e);
        }
    }
}
