package io.mixtune.model.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.safetensors.DType;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The dtype written into config.json after conversion is the one every transformers version reads. */
class ModelConfigDtypeTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    private static JsonNode recorded(Path dir, String configJson) throws IOException {
        Path file = Files.writeString(dir.resolve("config.json"), configJson);
        ModelConfig.recordDtype(file, DType.F16);
        return JSON.readTree(file.toFile());
    }

    @Test
    void eachSpellingInTheFileIsRewritten(@TempDir Path dir) throws IOException {
        // transformers 5 reads dtype, 4 torch_dtype: a file with both keeps both true.
        JsonNode both = recorded(dir, "{\"dtype\": \"bfloat16\", \"torch_dtype\": \"bfloat16\"}");
        assertEquals("float16", both.get("dtype").asText());
        assertEquals("float16", both.get("torch_dtype").asText());
        JsonNode five = recorded(dir, "{\"dtype\": \"bfloat16\"}");
        assertEquals("float16", five.get("dtype").asText());
        assertFalse(five.has("torch_dtype"));
        JsonNode neither = recorded(dir, "{\"model_type\": \"mistral\"}");
        assertEquals("float16", neither.get("torch_dtype").asText());
        assertFalse(neither.has("dtype"));
    }
}
