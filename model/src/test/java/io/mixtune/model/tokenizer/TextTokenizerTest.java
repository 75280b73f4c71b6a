package io.mixtune.model.tokenizer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.config.ModelPreset;
import java.io.InputStream;
import java.net.URL;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

/** The shipped Mistral v1 tokenizer.json, read by DJL, against SentencePiece's own ids on tokenizer.model.v1. */
class TextTokenizerTest {

    @Test
    void matchesSentencePieceOnOrdinaryText() throws Exception {
        URL tokenizerJson = getClass().getClassLoader().getResource(ModelPreset.MISTRAL_V1_TOKENIZER);
        JsonNode cases;
        try (InputStream in = getClass().getResourceAsStream("/golden/tokenizer/mistral-v1-ids.json")) {
            cases = new ObjectMapper().readTree(in);
        }
        assertTrue(cases.size() >= 10, "too few golden texts");
        try (TextTokenizer tokenizer = TextTokenizer.open(Path.of(tokenizerJson.toURI()), 1)) {
            for (JsonNode c : cases) {
                String text = c.get("text").asText();
                long[] expected = new long[c.get("ids").size()];
                for (int i = 0; i < expected.length; i++) {
                    expected[i] = c.get("ids").get(i).longValue();
                }
                long[] ids = tokenizer.encode(text, true);
                assertArrayEquals(expected, ids, "ids of " + text);
                assertEquals(1L, ids[0], "BOS first");
            }
        }
    }
}
