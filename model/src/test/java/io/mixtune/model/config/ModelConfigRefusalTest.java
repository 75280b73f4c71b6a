package io.mixtune.model.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Test;

/** A config.json that mixtune would run differently from transformers is refused, naming the key. */
class ModelConfigRefusalTest {
    private static ObjectNode mistral() {
        ObjectNode json = new ObjectMapper().createObjectNode();
        json.put("model_type", "mistral").put("hidden_size", 64).put("intermediate_size", 128)
                .put("num_hidden_layers", 2).put("num_attention_heads", 4).put("num_key_value_heads", 2)
                .put("vocab_size", 512);
        return json;
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
