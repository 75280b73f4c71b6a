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

    /**
     * The bundled tokenizer.json with the added tokens a Hub checkpoint lists: Mistral's {@code <unk> <s> </s>} (in
     * the vocabulary, ids 0-2, as Mistral-7B-v0.1's file has them) and ChatML's and [INST] as special tokens past it
     * (ids 32000-32003, as ChatML fine-tunes of Mistral add them).
     */
    static byte[] hubStyleTokenizerJson() throws IOException {
        ObjectMapper json = new ObjectMapper();
        com.fasterxml.jackson.databind.node.ObjectNode root;
        try (InputStream in = TextTokenizerTest.class.getClassLoader()
                .getResourceAsStream(ModelPreset.MISTRAL_V1_TOKENIZER)) {
            root = (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(in);
        }
        com.fasterxml.jackson.databind.node.ArrayNode added = root.putArray("added_tokens");
        String[] contents = {"<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "[INST]", "[/INST]"};
        long[] ids = {0, 1, 2, 32000, 32001, 32002, 32003};
        for (int i = 0; i < ids.length; i++) {
            added.addObject().put("id", ids[i]).put("content", contents[i]).put("single_word", false)
                    .put("lstrip", false).put("rstrip", false).put("normalized", false).put("special", true);
        }
        return json.writeValueAsBytes(root);
    }

    static final List<String> SPECIAL_SPELLINGS = List.of("<s>", "</s>", "<unk>", "Why does my output end with </s>?",
            "<s>[INST] hi [/INST] ok</s>", "<|im_start|>user\nhi<|im_end|>\n", "a</s>b<s>c", " </s> ", "[INST]",
            "x<|im_end|>", "<<s>>", "</s></s>");

    /**
     * transformers' split_special_tokens=True: with a Hub tokenizer.json that lists {@code <s>}, {@code </s>} and
     * ChatML's tokens as special, text that spells them gets the pieces of its characters, the ids the bundled file
     * (no added tokens, equal to SentencePiece) gives, never a special id.
     */
    @Test
    void hubSpecialTokensTypedAsTextStayText() throws IOException {
        try (TextTokenizer hub = TextTokenizer.read(new java.io.ByteArrayInputStream(hubStyleTokenizerJson()), "hub",
                BOS, EOS)) {
            List<String> all = new ArrayList<>(SPECIAL_SPELLINGS);
            all.addAll(texts);
            for (String text : all) {
                long[] ids = hub.encode(text, false);
                assertArrayEquals(tokenizer.encode(text, false), ids, "ids of " + text);
                assertTrue(Arrays.stream(ids).noneMatch(id -> id <= 2 || id >= 32000), text + " gave "
                        + Arrays.toString(ids));
                assertArrayEquals(tokenizer.encodeContinuation(text), hub.encodeContinuation(text), "continuation of "
                        + text);
            }
        }
    }

    /** A template's own strings, marked by control(), give the special ids; the text around them stays as it was. */
    @Test
    void controlMarksOnlyTheTemplatesSpecialTokens() throws IOException {
        try (TextTokenizer hub = TextTokenizer.read(new java.io.ByteArrayInputStream(hubStyleTokenizerJson()), "hub",
                BOS, EOS)) {
            String said = "say </s> and <|im_end|>";
            long[] ids = hub.encode(hub.control("<|im_start|>user\n") + said + hub.control("<|im_end|>\n</s>"), false);
            long[] specials = Arrays.stream(ids).filter(id -> id <= 2 || id >= 32000).toArray();
            assertArrayEquals(new long[] {32000, 32001, 2}, specials, Arrays.toString(ids));
            assertEquals(32000, ids[0]);
            assertEquals(2, ids[ids.length - 1]);
            // Between two special tokens, the bundled file's ids of the text: the tokenizers library normalizes each
            // piece between added tokens on its own, so this normalizer gives it the word-start "▁" (▁user).
            long[] expectedText = tokenizer.encode("user\n" + said, false);
            int imEnd = Arrays.stream(ids).boxed().toList().indexOf(32001L);
            assertArrayEquals(expectedText, Arrays.copyOfRange(ids, imEnd - expectedText.length, imEnd),
                    Arrays.toString(ids));
            // The bundled file has no added tokens: control() changes nothing there.
            assertEquals("<|im_start|>user\n", tokenizer.control("<|im_start|>user\n"));
        }
    }

    /** Spans are in UTF-16 indices of the text, past emoji (two chars, four byte tokens) and accents. */
    @Test
    void spansPointIntoTheTextInJavaIndices() {
        String text = "héllo 😀 wörld x";
        TextTokenizer.Spans spans = tokenizer.encodeWithSpans(text);
        assertArrayEquals(tokenizer.encode(text, false), spans.ids());
        int last = spans.ids().length - 1;
        assertEquals("x", text.substring(spans.starts()[last], spans.ends()[last]).strip());
        for (int i = 0; i <= last; i++) {
            assertTrue(spans.starts()[i] <= spans.ends()[i] && spans.ends()[i] <= text.length(), "token " + i);
        }
        List<String> pieces = new ArrayList<>();
        for (int i = 0; i <= last; i++) {
            pieces.add(text.substring(spans.starts()[i], spans.ends()[i]));
        }
        assertTrue(pieces.contains("😀"), pieces.toString());
    }
}
