package io.mixtune.data.template;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.data.read.ChatFormat;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The Jinja chat_template mixtune writes for each built-in template renders, through the Hugging Face path, to the
 * built-in renderer's ids and labels on all 36 golden chats (typed "</s>", "[INST]", leading spaces, CRLF, emoji...),
 * on the bundled tokenizer.json and on a Hub one declaring {@code <unk> <s> </s>} special.
 */
class BuiltInJinjaTest {

    static TextTokenizer tokenizer;
    static List<Conversation> conversations = new ArrayList<>();

    @BeforeAll
    static void open() throws IOException {
        tokenizer = TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2);
        int line = 1;
        for (JsonNode record : TemplateGoldenTest.lines("conversations.jsonl")) {
            conversations.add(new Conversation(ChatFormat.MESSAGES.messages(record), "conversations.jsonl:" + line++));
        }
    }

    @AfterAll
    static void close() {
        tokenizer.close();
    }

    @Test
    void mistralJinjaGivesTheMistralTemplatesIdsAndLabels() throws IOException {
        HfChatTemplate jinja = new HfChatTemplate(new JinjaChatTemplate("mistral", MistralTemplate.JINJA, "<s>", "</s>"),
                1, 2);
        assertSame(new MistralTemplate(1, 2), jinja, tokenizer);
        try (TextTokenizer hub = HubTokenizers.open("<unk>", "<s>", "</s>")) {
            assertSame(new MistralTemplate(1, 2), jinja, hub);
        }
    }

    @Test
    void chatMlJinjaGivesTheChatMlTemplatesIdsAndLabels() throws IOException {
        HfChatTemplate jinja = new HfChatTemplate(new JinjaChatTemplate("chatml", ChatMlTemplate.JINJA, "<s>", "</s>"),
                1, 2);
        assertSame(new ChatMlTemplate(), jinja, tokenizer);
        // Not with <|im_start|> declared special: there transformers encodes the text after each marker as a new
        // piece ("\n" becomes "▁\n"), which the jinja follows and the built-in's continuation encoding does not.
        try (TextTokenizer hub = HubTokenizers.open("<unk>", "<s>", "</s>")) {
            assertSame(new ChatMlTemplate(), jinja, hub);
        }
    }

    /**
     * A custom template's Jinja gives its ids and labels where its trained spans start and end after a newline (the
     * pieces tokenize apart as together): ChatML written as a custom template, and "### User/### Bot" strings with BOS,
     * a quote, a backslash and a carriage return, which the Jinja literals must keep.
     */
    @Test
    void customJinjaGivesTheCustomTemplatesIdsAndLabels() throws IOException {
        CustomTemplateConfig quirky = new CustomTemplateConfig("### System's rules\n", "\n",
                "### User \\ 'asks'\r\n", "\n", "### Bot\n", "\n###", "\n", true, false);
        for (CustomTemplateConfig strings : List.of(CustomTemplateTest.CHATML, quirky)) {
            CustomTemplate custom = new CustomTemplate(strings, 1, 2);
            assertSame(custom, jinja(custom), tokenizer);
            try (TextTokenizer hub = HubTokenizers.open("<unk>", "<s>", "</s>")) {
                assertSame(custom, jinja(custom), hub);
            }
        }
    }

    /**
     * With EOS after each answer, equal on a chat's first exchange; text after an EOS (after_assistant, the next turn)
     * differs by sentencepiece's "▁": transformers encodes the text after a special token as a new text, the custom
     * template as a continuation of the chat.
     */
    @Test
    void customJinjaWithEosGivesTheCustomTemplatesIdsAndLabelsOnFirstExchanges() {
        CustomTemplate custom = new CustomTemplate(new CustomTemplateConfig("", "\n", "User: ", "\n", "Bot:\n", "",
                "", true, true), 1, 2);
        HfChatTemplate jinja = jinja(custom);
        int line = 1;
        for (Conversation conversation : conversations) {
            List<Message> messages = conversation.messages();
            int answer = 0;
            while (messages.get(answer).role() != Role.ASSISTANT) {
                answer++;
            }
            Conversation first = new Conversation(messages.subList(0, answer + 1), conversation.source());
            TokenizedSample expected = TemplateGoldenTest.build(custom, first, tokenizer);
            TokenizedSample actual = TemplateGoldenTest.build(jinja, first, tokenizer);
            assertArrayEquals(expected.inputIds(), actual.inputIds(), "ids, line " + line);
            assertArrayEquals(expected.labels(), actual.labels(), "labels, line " + line);
            line++;
        }
    }

    private static HfChatTemplate jinja(CustomTemplate custom) {
        return new HfChatTemplate(new JinjaChatTemplate("custom", custom.jinja(), "<s>", "</s>"), 1, 2);
    }

    static void assertSame(ChatTemplate builtIn, HfChatTemplate jinja, TextTokenizer tokenizer) {
        assertEquals(36, conversations.size());
        int line = 1;
        for (Conversation conversation : conversations) {
            TokenizedSample expected = TemplateGoldenTest.build(builtIn, conversation, tokenizer);
            TokenizedSample actual = TemplateGoldenTest.build(jinja, conversation, tokenizer);
            assertArrayEquals(expected.inputIds(), actual.inputIds(), builtIn.name() + " ids, line " + line);
            assertArrayEquals(expected.labels(), actual.labels(), builtIn.name() + " labels, line " + line);
            line++;
        }
    }

    /** ChatML's markers are 7 pieces each on the Mistral v1 tokenizer, one id where the tokenizer declares them. */
    @Test
    void chatMlMarkersOnAMistralTokenizerAreWarnedWithTheirPieceCounts() throws IOException {
        String warning = TemplateMarkers.warning(new ChatMlTemplate(), tokenizer);
        assertEquals("chat template chatml: 2 of its 2 markers are not special tokens of the tokenizer and become "
                + "several text pieces (<|im_end|> 7 pieces, <|im_start|> 7 pieces): the model learns to spell them in "
                + "every turn; a tokenizer.json that declares them special (and embeddings for them) makes each one "
                + "token", warning);
        try (TextTokenizer hub = HubTokenizers.open("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")) {
            assertEquals(null, TemplateMarkers.warning(new ChatMlTemplate(), hub));
        }
        assertEquals(null, TemplateMarkers.warning(new MistralTemplate(1, 2), tokenizer));
    }
}
