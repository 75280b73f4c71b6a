package io.mixtune.data.template;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.read.ChatFormat;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.util.List;
import java.util.stream.LongStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

class CustomTemplateTest {
    static TextTokenizer tokenizer;
    static final long I = TokenizedSample.IGNORE;
    static final CustomTemplateConfig CHATML = new CustomTemplateConfig("<|im_start|>system\n", "<|im_end|>\n",
            "<|im_start|>user\n", "<|im_end|>\n", "<|im_start|>assistant\n", "<|im_end|>", "\n", false, false);
    static final CustomTemplateConfig PLAIN = new CustomTemplateConfig("", "\n", "User: ", "\n", "Bot:\n", null, "\n",
            true, true);
    static final Conversation TWO_TURNS = new Conversation(List.of(new Message(Role.USER, "Hi"),
            new Message(Role.ASSISTANT, "Hello!"), new Message(Role.USER, "Thanks"), new Message(Role.ASSISTANT, "Bye.")),
            "test:1");

    @BeforeAll
    static void open() {
        tokenizer = TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2);
    }

    @AfterAll
    static void close() {
        tokenizer.close();
    }

    static TokenizedSample build(ChatTemplate template, Conversation conversation, int maxSeqLen) {
        return new SampleBuilder(template, tokenizer, maxSeqLen, LossPolicy.ALL_ASSISTANT_TURNS).build(conversation)
                .sample();
    }

    /**
     * {@code <s>User: Hi\nBot:\n[Hello!</s>]\nUser: Thanks\nBot:\n[Bye.</s>]\n}, trained in brackets. Ids read off the
     * Mistral v1 vocabulary: only the first piece has the word-start "▁" (▁User), later ones continue the text
     * (User, not ▁User), and no piece repeats the newline it follows.
     */
    @Test
    void prefixesSuffixesBosAndEosByHand() {
        TokenizedSample sample = build(new CustomTemplate(PLAIN, 1, 2), TWO_TURNS, 100);
        long[] ids = {
            1, // <s>
            1247, 28747, 15359, 13, 25288, 28747, 13, // ▁User : ▁Hi \n Bot : \n
            16230, 28808, 2, // Hello ! </s>
            13, 730, 28747, 8868, 13, 25288, 28747, 13, // \n User : ▁Thanks \n Bot : \n
            1930, 28706, 28723, 2, // By e . </s>
            13}; // \n
        long[] labels = {I, I, I, I, I, I, I, I, 16230, 28808, 2, I, I, I, I, I, I, I, I, 1930, 28706, 28723, 2, I};
        assertArrayEquals(ids, sample.inputIds());
        assertArrayEquals(labels, sample.labels());
    }

    @Test
    void systemMessageAndNoSpecialTokens() {
        CustomTemplateConfig bare = new CustomTemplateConfig("", "\n", "User: ", "\n", "Bot:\n", "\n", null, false,
                false);
        Conversation chat = new Conversation(List.of(new Message(Role.SYSTEM, "You are terse."),
                new Message(Role.USER, "Hi"), new Message(Role.ASSISTANT, "Hello!")), "test:2");
        TokenizedSample sample = build(new CustomTemplate(bare, 1, 2), chat, 100);
        // ▁You ▁are ▁ter se . \n User : ▁Hi \n Bot : \n, then Hello ! \n trained (the suffix is "\n").
        long[] prompt = {995, 460, 3636, 331, 28723, 13, 730, 28747, 15359, 13, 25288, 28747, 13};
        assertArrayEquals(LongStream.concat(LongStream.of(prompt), LongStream.of(16230, 28808, 13)).toArray(),
                sample.inputIds());
        assertArrayEquals(LongStream.concat(LongStream.of(prompt).map(id -> I), LongStream.of(16230, 28808, 13))
                .toArray(), sample.labels());
        assertArrayEquals(tokenizer.encode("You are terse.\nUser: Hi\nBot:\nHello!\n", false), sample.inputIds(),
                "boundaries after newlines: the ids of the whole text");
    }

    @Test
    void truncationKeepsWholeExchangesAsForTheBuiltInTemplates() {
        TokenizedSample whole = build(new CustomTemplate(PLAIN, 1, 2), TWO_TURNS, 100);
        TokenizedSample first = build(new CustomTemplate(PLAIN, 1, 2), TWO_TURNS, whole.length() - 1);
        assertEquals(11, first.length(), "BOS, the first prompt, Hello ! </s>");
        assertArrayEquals(java.util.Arrays.copyOf(whole.inputIds(), 11), first.inputIds());
    }

    /** An independent check of both: ChatML written as a custom template gives the chatml template's ids and labels. */
    @Test
    void chatMlStringsEqualTheChatMlTemplateOnTheGoldenConversations() throws IOException {
        int line = 1;
        for (JsonNode record : TemplateGoldenTest.lines("conversations.jsonl")) {
            Conversation conversation = new Conversation(ChatFormat.MESSAGES.messages(record), "golden:" + line);
            TokenizedSample chatMl = build(new ChatMlTemplate(), conversation, 100_000);
            TokenizedSample custom = build(new CustomTemplate(CHATML, 1, 2), conversation, 100_000);
            assertArrayEquals(chatMl.inputIds(), custom.inputIds(), "ids, line " + line);
            assertArrayEquals(chatMl.labels(), custom.labels(), "labels, line " + line);
            line++;
        }
        assertEquals(37, line, "all 36 golden conversations");
    }

    static DataConfig config(String format, String template, CustomTemplateConfig custom, String lossOn) {
        return new DataConfig(List.of("a.jsonl"), null, 0, format, template, custom, 64, false, lossOn, false);
    }

    @Test
    void dataConfigPicksTheTemplateByName() {
        assertEquals("custom", config("auto", "custom", PLAIN, "all_assistant_turns").chatTemplate(1, 2).name());
        assertEquals("chatml", config("auto", "chatml", null, "all_assistant_turns").chatTemplate(1, 2).name());
        DataConfig mistral = config("auto", "mistral", null, "last_turn");
        assertEquals("mistral", mistral.chatTemplate(1, 2).name());
        assertEquals(LossPolicy.LAST_TURN, mistral.lossPolicy());
        IllegalArgumentException noStrings = assertThrows(IllegalArgumentException.class,
                () -> config("auto", "custom", null, "all_assistant_turns"));
        assertEquals("custom_template: template is custom but no custom_template is given", noStrings.getMessage());
        IllegalArgumentException unknown = assertThrows(IllegalArgumentException.class,
                () -> config("auto", "llama", null, "all_assistant_turns"));
        assertTrue(unknown.getMessage().startsWith("template: "), unknown.getMessage());
        assertThrows(IllegalArgumentException.class, () -> config("csv", "mistral", null, "all_assistant_turns"));
        assertThrows(IllegalArgumentException.class, () -> config("auto", "mistral", null, "everything"));
        assertEquals(new CustomTemplateConfig("", "", "", "", "", "", "", true, false),
                new CustomTemplateConfig(null, null, null, null, null, null, null, true, false),
                "strings left out are empty");
    }
}
