package io.mixtune.model.generate;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.mixtune.model.config.ModelConfig;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Which ids end an answer when the folder has no generation_config.json: transformers 5.18 builds the generation
 * config from config.json, so a list {@code eos_token_id} stops at every one of its ids (measured:
 * {@code from_pretrained(dir).generation_config.eos_token_id == [2, 7]}).
 */
class GenerationConfigEosTest {
    @Test
    void withoutTheFileEveryEosIdOfConfigJsonStops(@TempDir Path dir) throws IOException {
        String config = """
                {"model_type": "mistral", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                 "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64, "eos_token_id": [2, 7]}
                """;
        Files.writeString(dir.resolve("config.json"), config);
        ModelConfig model = ModelConfig.read(dir.resolve("config.json"));
        assertEquals(2, model.eosTokenId());
        assertEquals(List.of(2, 7), model.eosTokenIds());
        assertEquals(List.of(2, 7), GenerationConfig.read(dir, model).eosTokenIds());
        // config.json written back keeps the list, as transformers' save_pretrained does
        assertEquals(model, ModelConfig.fromJson(model.toJson("float32")));
        assertEquals("[2,7]", model.toJson("float32").get("eos_token_id").toString());
    }

    /**
     * A generation_config.json without {@code eos_token_id}: transformers 5.18 then has eos_token_id None and does not
     * stop at an EOS (measured: {@code GenerationConfig.from_pretrained(dir).eos_token_id is None}); mixtune stops at
     * config.json's ids instead (README), every one of a list, as when the file is missing.
     */
    @Test
    void aFileWithoutEosIdsStopsAtEveryEosIdOfConfigJson(@TempDir Path dir) throws IOException {
        Files.writeString(dir.resolve("config.json"), """
                {"model_type": "mistral", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                 "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64, "eos_token_id": [2, 7]}
                """);
        Files.writeString(dir.resolve(GenerationConfig.FILE_NAME), "{\"do_sample\": false}");
        assertEquals(List.of(2, 7), GenerationConfig.read(dir, ModelConfig.read(dir.resolve("config.json"))).eosTokenIds());
    }

    @Test
    void anEosIdOfConfigJsonOutsideTheVocabularyIsRefusedNamingConfigJson(@TempDir Path dir) throws IOException {
        Files.writeString(dir.resolve("config.json"), """
                {"model_type": "mistral", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                 "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64, "eos_token_id": [2, 70]}
                """);
        ModelConfig model = ModelConfig.read(dir.resolve("config.json"));
        IllegalArgumentException refused = org.junit.jupiter.api.Assertions.assertThrows(
                IllegalArgumentException.class, () -> GenerationConfig.read(dir, model));
        org.junit.jupiter.api.Assertions.assertTrue(refused.getMessage().contains(
                "config.json: eos_token_id must be a token id in [0, 64)"), refused.getMessage());
    }

    @Test
    void oneEosIdStaysOne(@TempDir Path dir) throws IOException {
        Files.writeString(dir.resolve("config.json"), """
                {"model_type": "mistral", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                 "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64, "eos_token_id": 2}
                """);
        assertEquals(List.of(2), GenerationConfig.read(dir, ModelConfig.read(dir.resolve("config.json"))).eosTokenIds());
    }
}
