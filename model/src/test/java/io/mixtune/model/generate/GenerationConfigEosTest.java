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
        assertEquals(List.of(2, 7), GenerationConfig.read(dir, model).eosTokenIds());
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
