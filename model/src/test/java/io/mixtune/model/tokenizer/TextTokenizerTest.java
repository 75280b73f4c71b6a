package io.mixtune.model.tokenizer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.config.ModelPreset;
import java.io.IOException;
import java.io.InputStream;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The shipped Mistral v1 tokenizer.json, read by DJL, against SentencePiece's own ids on tokenizer.model.v1
 * (golden/tokenizer/mistral-v1-ids.json: hand-picked hard cases and seeded random texts, interop/tokenizer_texts.py).
 */
class TextTokenizerTest {
    static final long BOS = 1;
    static final long EOS = 2;
    static TextTokenizer tokenizer;
    static List<String> texts = new ArrayList<>();
    static List<long[]> sentencePieceIds = new ArrayList<>();

    @BeforeAll
    static void open() throws IOException, URISyntaxException {
        URL tokenizerJson = TextTokenizerTest.class.getClassLoader().getResource(ModelPreset.MISTRAL_V1_TOKENIZER);
        tokenizer = TextTokenizer.open(Path.of(tokenizerJson.toURI()), BOS, EOS);
        try (InputStream in = TextTokenizerTest.class.getResourceAsStream("/golden/tokenizer/mistral-v1-ids.json")) {
            for (JsonNode c : new ObjectMapper().readTree(in)) {
                texts.add(c.get("text").asText());
                long[] ids = new long[c.get("ids").size()];
                for (int i = 0; i < ids.length; i++) {
                    ids[i] = c.get("ids").get(i).longValue();
                }
                sentencePieceIds.add(ids);
            }
        }
    }

    @AfterAll
    static void close() {
        tokenizer.close();
    }

    @Test
    void matchesSentencePieceOnEveryGoldenText() {
        assertTrue(texts.size() >= 300, "too few golden texts");
        for (int i = 0; i < texts.size(); i++) {
            long[] ids = tokenizer.encode(texts.get(i), true);
            assertArrayEquals(sentencePieceIds.get(i), ids, "ids of " + texts.get(i));
            assertEquals(BOS, ids[0], "BOS first");
        }
    }

    /** A chat message that quotes the special tokens must not put a BOS or EOS into the training data. */
    @Test
    void specialTokensTypedAsTextStayText() {
        for (String text : List.of("<s>", "</s>", "Why does my output end with </s>?", "<s>[INST] hi [/INST] ok</s>")) {
            long[] ids = tokenizer.encode(text, false);
            assertTrue(Arrays.stream(ids).noneMatch(id -> id == BOS || id == EOS),
                    text + " gave " + Arrays.toString(ids));
        }
    }

    /** As SentencePiece decodes: dummy-prefix space and control tokens dropped, a "▁" typed in the text a space. */
    @Test
    void decodeGivesTheTextBack() {
        for (int i = 0; i < texts.size(); i++) {
            long[] ids = sentencePieceIds.get(i);
            long[] withEos = Arrays.copyOf(ids, ids.length + 1);
            withEos[ids.length] = EOS;
            assertEquals(texts.get(i).replace('\u2581', ' '), tokenizer.decode(withEos), "decode of " + texts.get(i));
        }
    }

    /** How ChatMlTemplate tokenizes: piece by piece after a "\n", with the ids of the whole string. */
    @Test
    void continuationAfterANewlineEqualsTheWholeString() {
        String prefix = "<|im_start|>user\n";
        long[] head = tokenizer.encode(prefix, false);
        for (String text : texts) {
            long[] tail = tokenizer.encodeContinuation(text);
            long[] joined = Arrays.copyOf(head, head.length + tail.length);
            System.arraycopy(tail, 0, joined, head.length, tail.length);
            assertArrayEquals(tokenizer.encode(prefix + text, false), joined, "continuation of " + text);
        }
    }
}
