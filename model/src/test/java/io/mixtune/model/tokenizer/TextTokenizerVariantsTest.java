package io.mixtune.model.tokenizer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.config.ModelPreset;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.LongStream;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The tokenizer.json layouts of Hub Mistral checkpoints (Mistral-7B-v0.1's Prepend + Replace normalizer, transformers'
 * Metaspace "first" and "always", v0.3's control tokens as special added tokens, and a byte-level BPE with tekken's
 * (Mistral-Nemo's) pre-tokenizer and no word-start prefix), against the tokenizers library 0.23
 * on golden/tokenizer/variants.json (interop/make_tokenizer_variant_goldens.py): user text with special tokens kept as
 * text, a template's strings with them matched, decode skipping special tokens, and continuation encoding.
 */
class TextTokenizerVariantsTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    static Stream<Arguments> variants() throws IOException {
        try (InputStream in = TextTokenizerVariantsTest.class.getResourceAsStream("/golden/tokenizer/variants.json")) {
            List<Arguments> variants = new ArrayList<>();
            JSON.readTree(in).forEach(v -> variants.add(Arguments.of(v.get("name").asText(), v)));
            return variants.stream();
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("variants")
    void encodesAndDecodesAsTheTokenizersLibrary(String name, JsonNode variant) throws IOException {
        ObjectNode root = tokenizerJson(variant);
        try (TextTokenizer tokenizer = TextTokenizer.read(new ByteArrayInputStream(JSON.writeValueAsBytes(root)), name,
                1, 2)) {
            assertEncodesAndDecodes(name, variant, tokenizer);
        }
    }

    /**
     * A model whose tokenizer has no BOS (TextTokenizer.NO_BOS): text "with BOS" is what the tokenizers library's
     * encode with the post-processor gives (golden/tokenizer/no-bos.json): the bundled TemplateProcessing's {@code <s>}
     * in front, nothing for tekken-style, which has no post-processor; special tokens typed in the text stay text.
     */
    @Test
    void withoutBosTextGetsWhatThePostProcessorAdds() throws IOException {
        Map<String, JsonNode> byName = new HashMap<>();
        variants().forEach(a -> byName.put((String) a.get()[0], (JsonNode) a.get()[1]));
        JsonNode golden;
        try (InputStream in = getClass().getResourceAsStream("/golden/tokenizer/no-bos.json")) {
            golden = JSON.readTree(in);
        }
        assertEquals(byName.size(), golden.size());
        for (JsonNode expected : golden) {
            String name = expected.get("name").asText();
            try (TextTokenizer tokenizer = TextTokenizer.read(new ByteArrayInputStream(JSON.writeValueAsBytes(
                    tokenizerJson(byName.get(name)))), name, TextTokenizer.NO_BOS, 2)) {
                for (JsonNode c : expected.get("texts")) {
                    String text = c.get("text").asText();
                    assertArrayEquals(longs(c.get("ids")), tokenizer.encode(text, true), name + ": " + text);
                }
                assertEquals(!expected.get("post_processor").asBoolean(), tokenizer.encode("", true).length == 0, name);
                // what needs no BOS is as with one: the variant's goldens hold
                assertEncodesAndDecodes(name, byName.get(name), tokenizer);
            }
        }
    }

    private ObjectNode tokenizerJson(JsonNode variant) throws IOException {
        ObjectNode root;
        try (InputStream in = variant.has("tokenizer")
                ? getClass().getResourceAsStream("/golden/tokenizer/" + variant.get("tokenizer").asText())
                : getClass().getClassLoader().getResourceAsStream(ModelPreset.MISTRAL_V1_TOKENIZER)) {
            root = (ObjectNode) JSON.readTree(in);
        }
        variant.path("overlay").fields().forEachRemaining(e -> root.set(e.getKey(), e.getValue()));
        return root;
    }

    private static void assertEncodesAndDecodes(String name, JsonNode variant, TextTokenizer tokenizer) {
        for (JsonNode c : variant.get("texts")) {
            String text = c.get("text").asText();
            assertArrayEquals(longs(c.get("ids")), tokenizer.encode(text, false), name + ": text " + text);
        }
        for (JsonNode c : variant.get("templates")) {
            String text = c.get("text").asText();
            assertArrayEquals(longs(c.get("ids")), tokenizer.encode(tokenizer.control(text), false),
                    name + ": template " + text);
        }
        for (JsonNode c : variant.get("decodes")) {
            assertEquals(c.get("text").asText(), tokenizer.decode(longs(c.get("ids"))), name + ": decode "
                    + c.get("ids"));
        }
        for (JsonNode c : variant.get("joins")) {
            long[] joined = LongStream.concat(LongStream.of(tokenizer.encode(c.get("first").asText(), false)),
                    LongStream.of(tokenizer.encodeContinuation(c.get("second").asText()))).toArray();
            assertArrayEquals(longs(c.get("ids")), joined, name + ": " + c.get("first") + " + " + c.get("second"));
        }
    }

    /** A component type the tokenizers library does not know is named with its place, not as an untagged-enum miss. */
    @Test
    void anUnknownComponentTypeIsNamed() throws IOException {
        String[][] edits = {{"model", "Foo"}, {"pre_tokenizer", "Bar"}, {"normalizer", "Baz"}, {"decoder", "Qux"}};
        for (String[] edit : edits) {
            ObjectNode root;
            try (InputStream in = getClass().getClassLoader().getResourceAsStream(ModelPreset.MISTRAL_V1_TOKENIZER)) {
                root = (ObjectNode) JSON.readTree(in);
            }
            if (edit[0].equals("model")) {
                ((ObjectNode) root.get("model")).put("type", edit[1]);
            } else {
                // Inside a Sequence, as tokenizer.json files nest them.
                root.putObject(edit[0]).put("type", "Sequence").putArray(edit[0].replace("_", "") + "s")
                        .addObject().put("type", edit[1]);
            }
            byte[] json = JSON.writeValueAsBytes(root);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> TextTokenizer.read(new ByteArrayInputStream(json), "X/tokenizer.json", 1, 2).close());
            assertTrue(e.getMessage().startsWith("X/tokenizer.json: ") && e.getMessage().contains("types are")
                    && e.getMessage().contains(edit[0] + " type \"" + edit[1] + "\""), e.getMessage());
        }
    }

    private static long[] longs(JsonNode array) {
        long[] values = new long[array.size()];
        for (int i = 0; i < values.length; i++) {
            values[i] = array.get(i).longValue();
        }
        return values;
    }
}
