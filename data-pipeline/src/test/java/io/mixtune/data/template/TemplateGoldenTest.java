package io.mixtune.data.template;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.chat.Conversation;
import io.mixtune.data.read.ChatFormat;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Templates against references computed by mistral-common + SentencePiece and by transformers' apply_chat_template
 * (interop/make_template_goldens.py), on 36 tricky conversations, every one compared.
 */
class TemplateGoldenTest {
    static TextTokenizer tokenizer;
    static List<Conversation> conversations = new ArrayList<>();

    @BeforeAll
    static void open() throws IOException {
        tokenizer = TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2);
        int line = 1;
        for (JsonNode record : lines("conversations.jsonl")) {
            conversations.add(new Conversation(ChatFormat.MESSAGES.messages(record), "conversations.jsonl:" + line++));
        }
    }

    @AfterAll
    static void close() {
        tokenizer.close();
    }

    static List<JsonNode> lines(String name) throws IOException {
        List<JsonNode> rows = new ArrayList<>();
        ObjectMapper json = new ObjectMapper();
        try (BufferedReader in = new BufferedReader(new InputStreamReader(
                TemplateGoldenTest.class.getResourceAsStream("/golden/templates/" + name), StandardCharsets.UTF_8))) {
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                rows.add(json.readTree(line));
            }
        }
        return rows;
    }

    static long[] longs(JsonNode array) {
        long[] values = new long[array.size()];
        for (int i = 0; i < values.length; i++) {
            values[i] = array.get(i).longValue();
        }
        return values;
    }

    static TokenizedSample build(ChatTemplate template, Conversation conversation) {
        return build(template, conversation, tokenizer);
    }

    static TokenizedSample build(ChatTemplate template, Conversation conversation, TextTokenizer tokenizer) {
        return new SampleBuilder(template, tokenizer, 100_000, LossPolicy.ALL_ASSISTANT_TURNS).build(conversation).sample();
    }

    /** Every conversation, including "</s>" and "[INST]" typed in messages, leading spaces and runs of spaces. */
    @Test
    void mistralTemplateEqualsMistralCommon() throws IOException {
        assertEveryLineEquals(lines("mistral.jsonl"), new MistralTemplate(1, 2));
    }

    @Test
    void chatMlEqualsApplyChatTemplate() throws IOException {
        assertEveryLineEquals(lines("chatml.jsonl"), new ChatMlTemplate());
    }

    /**
     * A Hub Mistral's tokenizer.json lists {@code <unk> <s> </s>} as special added tokens: the chats that type them
     * ("special-tokens-as-text" and others) must still give mistral-common's ids, which never match them in text,
     * and apply_chat_template's with split_special_tokens=True.
     */
    @Test
    void hubTokenizerWithSpecialAddedTokensGivesTheSameIds() throws IOException {
        try (TextTokenizer hub = HubTokenizers.open("<unk>", "<s>", "</s>")) {
            assertEveryLineEquals(lines("mistral.jsonl"), new MistralTemplate(1, 2), hub);
            assertEveryLineEquals(lines("chatml.jsonl"), new ChatMlTemplate(), hub);
        }
    }

    static void assertEveryLineEquals(List<JsonNode> expected, ChatTemplate template) {
        assertEveryLineEquals(expected, template, tokenizer);
    }

    static void assertEveryLineEquals(List<JsonNode> expected, ChatTemplate template, TextTokenizer tokenizer) {
        assertEquals(36, conversations.size());
        assertEquals(conversations.size(), expected.size());
        for (int i = 0; i < conversations.size(); i++) {
            TokenizedSample sample = build(template, conversations.get(i), tokenizer);
            assertArrayEquals(longs(expected.get(i).get("input_ids")), sample.inputIds(), "ids, line " + (i + 1));
            assertArrayEquals(longs(expected.get(i).get("labels")), sample.labels(), "labels, line " + (i + 1));
        }
    }
}
