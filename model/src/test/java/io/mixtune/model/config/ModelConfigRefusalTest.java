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
}
