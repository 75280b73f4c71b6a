package io.mixtune.model.generate;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.config.ModelConfig.ModelType;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.BitSet;
import java.util.HashSet;
import java.util.List;
import java.util.Optional;
import java.util.OptionalDouble;
import java.util.OptionalInt;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * mixtune's token choice against transformers 5.18's processors and warpers on fixed logits
 * ({@code interop/make_sampling_goldens.py}): the settings a generation_config.json and the caller's values resolve to,
 * the same tokens kept, the same scores, and samples drawn only from the kept tokens.
 */
class TokenSamplerGoldenTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path dir;

    private static JsonNode golden() throws Exception {
        return JSON.readTree(Path.of(TokenSamplerGoldenTest.class.getResource("/golden/sampling/warpers.json").toURI())
                .toFile());
    }

    /** The settings transformers resolved: its generation config from the file, the caller's kwargs over it. */
    private TokenSampler.Settings settings(JsonNode testCase, int vocab) throws Exception {
        Path model = Files.createDirectories(dir.resolve(testCase.get("name").asText()));
        Files.writeString(model.resolve(GenerationConfig.FILE_NAME), testCase.get("generation_config").toString());
        GenerationConfig file = GenerationConfig.read(model, tinyConfig(vocab));
        JsonNode kwargs = testCase.get("kwargs");
        TokenSampler.Settings settings = file.resolve(
                kwargs.has("do_sample") ? Optional.of(kwargs.get("do_sample").asBoolean()) : Optional.empty(),
                kwargs.has("temperature") ? OptionalDouble.of(kwargs.get("temperature").asDouble()) : OptionalDouble.empty(),
                kwargs.has("top_k") ? OptionalInt.of(kwargs.get("top_k").asInt()) : OptionalInt.empty(),
                kwargs.has("top_p") ? OptionalDouble.of(kwargs.get("top_p").asDouble()) : OptionalDouble.empty(),
                kwargs.has("min_p") ? OptionalDouble.of(kwargs.get("min_p").asDouble()) : OptionalDouble.empty(),
                kwargs.has("repetition_penalty") ? OptionalDouble.of(kwargs.get("repetition_penalty").asDouble())
                        : OptionalDouble.empty());
        JsonNode resolved = testCase.get("settings");
        String name = testCase.get("name").asText();
        assertEquals(resolved.get("do_sample").asBoolean(), settings.doSample(), name);
        assertEquals(resolved.get("temperature").asDouble(), settings.temperature(), name);
        assertEquals(resolved.get("top_k").asInt(), settings.topK(), name);
        assertEquals(resolved.get("top_p").asDouble(), settings.topP(), name);
        assertEquals(resolved.get("min_p").isNull() ? 0 : resolved.get("min_p").asDouble(), settings.minP(), name);
        assertEquals(resolved.get("repetition_penalty").asDouble(), settings.repetitionPenalty(), name);
        return settings;
    }

    @Test
    void keptTokensAndScoresEqualTransformersProcessors() throws Exception {
        JsonNode golden = golden();
        float[] logits = floats(golden.get("logits"));
        BitSet seen = new BitSet();
        golden.get("context_ids").forEach(id -> seen.set(id.asInt()));
        for (JsonNode testCase : golden.get("cases")) {
            String name = testCase.get("name").asText();
            float[] scores = new TokenSampler(settings(testCase, logits.length), 0).process(logits, seen);
            JsonNode expected = testCase.get("scores");
            for (int i = 0; i < logits.length; i++) {
                if (expected.get(i).isNull()) {
                    assertEquals(Float.NEGATIVE_INFINITY, scores[i], name + ": token " + i + " is removed");
                } else {
                    float value = expected.get(i).floatValue();
                    assertEquals(value, scores[i], 1e-6f * Math.max(1, Math.abs(value)), name + ": token " + i);
                }
            }
        }
    }

    /** The old sampler drew 5 of 2000 samples outside the 25 tokens transformers keeps at temperature 0.7, top-p 0.95. */
    @Test
    void everySampleIsATokenTransformersKeeps() throws Exception {
        JsonNode golden = golden();
        float[] logits = floats(golden.get("logits"));
        BitSet seen = new BitSet();
        golden.get("context_ids").forEach(id -> seen.set(id.asInt()));
        for (JsonNode testCase : golden.get("cases")) {
            TokenSampler.Settings settings = settings(testCase, logits.length);
            Set<Integer> kept = new HashSet<>();
            for (int i = 0; i < logits.length; i++) {
                if (!testCase.get("scores").get(i).isNull()) {
                    kept.add(i);
                }
            }
            TokenSampler sampler = new TokenSampler(settings, 1);
            Set<Integer> drawn = new HashSet<>();
            for (int n = 0; n < 2000; n++) {
                drawn.add(sampler.next(logits, seen));
            }
            assertTrue(kept.containsAll(drawn), testCase.get("name").asText() + ": drew " + drawn + ", transformers "
                    + "keeps " + kept);
            if (settings.doSample() && kept.size() > 1) {
                assertTrue(drawn.size() > 1, testCase.get("name").asText() + " samples");
            }
        }
    }

    @Test
    void anEosListEndsAnswersAtAnyOfItsIdsAndAMissingOneFallsBackToConfigJson() throws Exception {
        ModelConfig config = tinyConfig(32000);
        Files.writeString(dir.resolve(GenerationConfig.FILE_NAME), "{\"eos_token_id\": [2, 24363], \"do_sample\": false}");
        assertEquals(List.of(2, 24363), GenerationConfig.read(dir, config).eosTokenIds());
        Files.writeString(dir.resolve(GenerationConfig.FILE_NAME), "{\"do_sample\": true, \"top_k\": 0}");
        GenerationConfig noEos = GenerationConfig.read(dir, config);
        assertEquals(List.of(2), noEos.eosTokenIds());
        assertEquals(new TokenSampler.Settings(true, 1, 0, 1, 0, 1), noEos.defaults());
        Files.writeString(dir.resolve(GenerationConfig.FILE_NAME), "{\"eos_token_id\": [2, 40000]}");
        IllegalArgumentException outside = org.junit.jupiter.api.Assertions.assertThrows(
                IllegalArgumentException.class, () -> GenerationConfig.read(dir, config));
        assertTrue(outside.getMessage().contains("generation_config.json: eos_token_id must be a token id in [0, 32000)"),
                outside.getMessage());
        // No file: config.json's EOS and transformers' GenerationConfig() defaults (do_sample False, temperature 1,
        // top_k 50, top_p 1, min_p None, repetition_penalty 1).
        GenerationConfig none = GenerationConfig.read(dir.resolve("none"), config);
        assertEquals(List.of(2), none.eosTokenIds());
        assertEquals(new TokenSampler.Settings(false, 1, 50, 1, 0, 1), none.defaults());
        assertEquals(null, none.file());
        assertTrue(none.unusableSamplingValues().isEmpty());
    }

    /** As in transformers, a sampling value only sampling uses (temperature 0 here) fails only when sampling uses it. */
    @Test
    void aSamplingValueSamplingCannotUseFailsOnlyWhenUsed() throws Exception {
        ModelConfig config = tinyConfig(32000);
        Files.writeString(dir.resolve(GenerationConfig.FILE_NAME), "{\"do_sample\": false, \"temperature\": 0.0}");
        GenerationConfig file = GenerationConfig.read(dir, config);
        OptionalDouble none = OptionalDouble.empty();
        assertEquals(TokenSampler.Settings.DEFAULTS, file.resolve(Optional.empty(), none, OptionalInt.empty(), none,
                none, none));
        assertEquals(0.7, file.resolve(Optional.of(true), OptionalDouble.of(0.7), OptionalInt.empty(), none, none,
                none).temperature());
        IllegalArgumentException sampled = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> file.resolve(Optional.of(true), none, OptionalInt.empty(), none, none, none));
        assertTrue(sampled.getMessage().startsWith(dir.resolve(GenerationConfig.FILE_NAME) + ": temperature 0.0 cannot "
                + "be sampled with: temperature must be a number > 0"), sampled.getMessage());
    }

    private static ModelConfig tinyConfig(int vocab) {
        return new ModelConfig(ModelType.MISTRAL, 16, 32, 1, 2, 1, 8, vocab, 1e-5, 10000, null, 128, false, 0, 0, 0,
                1, 2);
    }

    private static float[] floats(JsonNode array) {
        float[] values = new float[array.size()];
        for (int i = 0; i < values.length; i++) {
            values[i] = array.get(i).floatValue();
        }
        return values;
    }
}
