package io.mixtune.model.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A config.json that mixtune would run differently from transformers is refused, naming the key. */
class ModelConfigRefusalTest {
    private static ObjectNode mistral() {
        ObjectNode json = new ObjectMapper().createObjectNode();
        json.put("model_type", "mistral").put("hidden_size", 64).put("intermediate_size", 128)
                .put("num_hidden_layers", 2).put("num_attention_heads", 4).put("num_key_value_heads", 2)
                .put("vocab_size", 512);
        return json;
    }

    /**
     * "bos_token_id": null. transformers 5.18 keeps the null in the config and loads the model whatever the tokenizer
     * says; its chat template renders the tokenizer's bos_token (tokenizer_config.json's, its id in tokenizer.json), and
     * nothing where that is null. mixtune, whose samples and prompts take the id from the config, takes that token's
     * id, and where the tokenizer has none (bos_token null, or a token tokenizer.json lacks) reads the config all the
     * same, with no BOS id: the commands that tokenize then write none where transformers writes none, and refuse a
     * token tokenizer.json lacks naming the files (trainer's ModelTokenizerTest#aModelWithoutABosTokenTokenizesAsTransformersDoes,
     * #aBosTokenTheTokenizerLacksIsRefusedWhereItTokenizes).
     */
    @Test
    void aNullBosTokenIdIsTheTokenizersBosToken(@TempDir Path dir) throws Exception {
        ObjectMapper json = new ObjectMapper();
        json.writeValue(dir.resolve("config.json").toFile(), mistral().putNull("bos_token_id"));
        Files.writeString(dir.resolve("tokenizer.json"), "{\"model\": {\"vocab\": {\"<unk>\": 0, \"</s>\": 2, "
                + "\"<s>\": 3}}, \"added_tokens\": [{\"id\": 5, \"content\": \"<|begin|>\"}]}");
        assertEquals(3, ModelConfig.read(dir.resolve("config.json")).bosTokenId(), "<s> when tokenizer_config.json "
                + "names no bos_token");
        Files.writeString(dir.resolve("tokenizer_config.json"), "{\"bos_token\": \"<|begin|>\"}");
        assertEquals(5, ModelConfig.read(dir.resolve("config.json")).bosTokenId());
        Files.writeString(dir.resolve("tokenizer_config.json"), "{\"bos_token\": {\"content\": \"<|begin|>\", "
                + "\"special\": true}}");
        assertEquals(5, ModelConfig.read(dir.resolve("config.json")).bosTokenId(), "an AddedToken's content");

        Files.writeString(dir.resolve("tokenizer_config.json"), "{\"bos_token\": \"<start>\"}");
        ModelConfig unknown = ModelConfig.read(dir.resolve("config.json"));
        assertNull(unknown.bosTokenId(), "a token tokenizer.json lacks: no BOS id");
        assertTrue(unknown.toJson("float32").get("bos_token_id").isNull(), "written back as it was read");
        assertEquals(dir.resolve("config.json") + ": bos_token_id is null and " + dir.resolve("tokenizer.json")
                + " has no token \"<start>\" (the bos_token of " + dir.resolve("tokenizer_config.json") + ")",
                ModelConfig.noBosToken(dir.resolve("config.json")));
        assertTrue(ModelConfig.bosTokenUnknownToTokenizer(dir.resolve("config.json")), "refused where it tokenizes");
        Files.writeString(dir.resolve("tokenizer_config.json"), "{\"bos_token\": null}");
        assertFalse(ModelConfig.bosTokenUnknownToTokenizer(dir.resolve("config.json")), "none: tokenized without");
        assertNull(ModelConfig.read(dir.resolve("config.json")).bosTokenId(), "bos_token null: no BOS id");
        assertEquals(dir.resolve("config.json") + ": bos_token_id is null and " + dir.resolve("tokenizer_config.json")
                + " sets bos_token to null", ModelConfig.noBosToken(dir.resolve("config.json")));

        json.writeValue(dir.resolve("config.json").toFile(), mistral());
        assertEquals(1, ModelConfig.read(dir.resolve("config.json")).bosTokenId(), "left out: MistralConfig's 1");
    }

    @Test
    void anActivationOtherThanSiluIsRefused() {
        ObjectNode json = mistral().put("hidden_act", "gelu");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ModelConfig.fromJson(json));
        assertTrue(e.getMessage().contains("hidden_act \"gelu\"") && e.getMessage().contains("silu"), e.getMessage());
        assertEquals(64, ModelConfig.fromJson(mistral().put("hidden_act", "silu")).hiddenSize());
        assertEquals(64, ModelConfig.fromJson(mistral()).hiddenSize(), "silu is the default");
    }

    @Test
    void scaledRotaryEmbeddingsAreRefusedInEitherSpelling() {
        ObjectNode four = mistral();
        four.putObject("rope_scaling").put("type", "linear").put("factor", 2.0);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ModelConfig.fromJson(four));
        assertTrue(e.getMessage().contains("rope_scaling") && e.getMessage().contains("linear"), e.getMessage());
        ObjectNode five = mistral();
        five.putObject("rope_parameters").put("rope_type", "yarn").put("rope_theta", 1e6).put("factor", 4.0);
        e = assertThrows(IllegalArgumentException.class, () -> ModelConfig.fromJson(five));
        assertTrue(e.getMessage().contains("rope_parameters.rope_type \"yarn\""), e.getMessage());
        ObjectNode plain = mistral();
        plain.putObject("rope_parameters").put("rope_type", "default").put("rope_theta", 2e4);
        plain.putNull("rope_scaling");
        assertEquals(2e4, ModelConfig.fromJson(plain).ropeTheta());
    }
}
