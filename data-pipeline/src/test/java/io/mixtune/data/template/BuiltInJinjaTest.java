package io.mixtune.data.template;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.mixtune.data.chat.Conversation;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The Jinja chat_template mixtune writes for each built-in template renders, through the Hugging Face path, to the
 * built-in renderer's ids and labels on all 36 golden chats (typed "</s>", "[INST]", leading spaces, CRLF, emoji...),
 * on the bundled tokenizer.json and on a Hub one declaring {@code <unk> <s> </s>} special.
 */
class BuiltInJinjaTest {

    @BeforeAll
    static void open() throws IOException {
        TemplateGoldenTest.open();
    }

    @Test
    void mistralJinjaGivesTheMistralTemplatesIdsAndLabels() throws IOException {
        HfChatTemplate jinja = new HfChatTemplate(new JinjaChatTemplate("mistral", MistralTemplate.JINJA, "<s>", "</s>"),
                1, 2);
        assertSame(new MistralTemplate(1, 2), jinja, TemplateGoldenTest.tokenizer);
        try (TextTokenizer hub = HubTokenizers.open("<unk>", "<s>", "</s>")) {
            assertSame(new MistralTemplate(1, 2), jinja, hub);
        }
    }

    @Test
    void chatMlJinjaGivesTheChatMlTemplatesIdsAndLabels() throws IOException {
        HfChatTemplate jinja = new HfChatTemplate(new JinjaChatTemplate("chatml", ChatMlTemplate.JINJA, "<s>", "</s>"),
                1, 2);
        assertSame(new ChatMlTemplate(), jinja, TemplateGoldenTest.tokenizer);
        // Not with <|im_start|> declared special: there transformers encodes the text after each marker as a new
        // piece ("\n" becomes "▁\n"), which the jinja follows and the built-in's continuation encoding does not.
        try (TextTokenizer hub = HubTokenizers.open("<unk>", "<s>", "</s>")) {
            assertSame(new ChatMlTemplate(), jinja, hub);
        }
    }

    static void assertSame(ChatTemplate builtIn, HfChatTemplate jinja, TextTokenizer tokenizer) {
        assertEquals(36, TemplateGoldenTest.conversations.size());
        int line = 1;
        for (Conversation conversation : TemplateGoldenTest.conversations) {
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
        String warning = TemplateMarkers.warning(new ChatMlTemplate(), TemplateGoldenTest.tokenizer);
        assertEquals("chat template chatml: 2 of its 2 markers are not special tokens of the tokenizer and become "
                + "several text pieces (<|im_end|> 7 pieces, <|im_start|> 7 pieces): the model learns to spell them in "
                + "every turn; a tokenizer.json that declares them special (and embeddings for them) makes each one "
                + "token", warning);
        try (TextTokenizer hub = HubTokenizers.open("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")) {
            assertEquals(null, TemplateMarkers.warning(new ChatMlTemplate(), hub));
        }
        assertEquals(null, TemplateMarkers.warning(new MistralTemplate(1, 2), TemplateGoldenTest.tokenizer));
    }
}
