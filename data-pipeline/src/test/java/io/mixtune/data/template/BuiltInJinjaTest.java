package io.mixtune.data.template;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.data.chat.Conversation;
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
