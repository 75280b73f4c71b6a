package io.mixtune.data.dataset;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.read.ChatFormat;
import io.mixtune.data.template.ChatMlTemplate;
import io.mixtune.data.template.ChatTemplate;
import io.mixtune.data.template.CustomTemplate;
import io.mixtune.data.template.CustomTemplateConfig;
import io.mixtune.data.template.HfChatTemplate;
import io.mixtune.data.template.JinjaChatTemplate;
import io.mixtune.data.template.LossPolicy;
import io.mixtune.data.template.MistralTemplate;
import io.mixtune.data.template.SampleBuilder;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ChatDatasetTest {
    static TextTokenizer tokenizer;

    @BeforeAll
    static void open() {
        tokenizer = TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2);
    }

    @AfterAll
    static void close() {
        tokenizer.close();
    }

    static String chat(String user, String assistant) {
        return "{\"messages\": [{\"role\": \"user\", \"content\": \"" + user + "\"}, {\"role\": \"assistant\", "
                + "\"content\": \"" + assistant + "\"}]}";
    }

    Path file(Path dir) throws IOException {
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < 20; i++) {
            lines.add(chat("Question " + i + "?", "Answer " + i + "."));
        }
        lines.add("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}"); // line 21: no answer
        lines.add("not json"); // line 22
        lines.add(chat("word ".repeat(100).trim(), "ok")); // line 23: prompt longer than max_seq_len
        Path file = dir.resolve("chats.jsonl");
        Files.write(file, lines);
        return file;
    }

    SampleBuilder builder() {
        return new SampleBuilder(new MistralTemplate(1, 2), tokenizer, 48, LossPolicy.ALL_ASSISTANT_TURNS);
    }

    @Test
    void skipInvalidCountsEveryRecordByReason(@TempDir Path dir) throws IOException {
        Path file = file(dir);
        ChatDataset dataset = ChatDataset.load(List.of(file), List.of(), 0.25, 7, null, builder(), true);
        DataReport report = dataset.report();
        assertEquals(23, report.records());
        assertEquals(20, report.samples());
        assertEquals(Map.of("no assistant message", 1L, "malformed JSON", 1L,
                "no target left after truncation", 1L), report.skipped());
        assertEquals(15, dataset.train().size());
        assertEquals(5, dataset.validation().size());
        assertEquals(report.targetTokens(), dataset.train().stream().mapToInt(TokenizedSample::targetCount).sum()
                + dataset.validation().stream().mapToInt(TokenizedSample::targetCount).sum());
        ChatDataset again = ChatDataset.load(List.of(file), List.of(), 0.25, 7, null, builder(), true);
        assertEquals(dataset.validation().stream().map(TokenizedSample::source).toList(),
                again.validation().stream().map(TokenizedSample::source).toList(), "the split is seeded");
        assertTrue(report.toString().contains("20 samples"), report.toString());
    }

    @Test
    void withoutSkipInvalidTheFirstBadRecordStopsTheRun(@TempDir Path dir) throws IOException {
        Path file = file(dir);
        InvalidRecordException e = assertThrows(InvalidRecordException.class,
                () -> ChatDataset.load(List.of(file), List.of(), 0, 7, null, builder(), false));
        assertTrue(e.getMessage().startsWith(file + ":21: no assistant message: nothing to train on"), e.getMessage());
    }

    Path write(Path dir, String... lines) throws IOException {
        Path file = dir.resolve("shapes.jsonl");
        Files.write(file, List.of(lines));
        return file;
    }

    static String message(String role, String content) {
        return "{\"role\": \"" + role + "\", \"content\": \"" + content + "\"}";
    }

    static String messages(String... messages) {
        return "{\"messages\": [" + String.join(", ", messages) + "]}";
    }

    /** axolotl trains the rest with a warning, TRL masks them: messages after the last answer teach nothing. */
    @Test
    void aChatThatGoesOnAfterItsLastAnswerTrainsWithoutItsTailAndIsCounted(@TempDir Path dir) throws IOException {
        Path file = write(dir, messages(message("user", "Hi"), message("assistant", "Hello!"), message("user", "Thanks")),
                messages(message("user", "Hi"), message("assistant", "Hello!")));
        ChatDataset dataset = ChatDataset.load(List.of(file), List.of(), 0, 7, null, builder(), false);
        assertEquals(2, dataset.train().size());
        assertArrayEquals(dataset.train().get(1).inputIds(), dataset.train().get(0).inputIds());
        assertArrayEquals(dataset.train().get(1).labels(), dataset.train().get(0).labels());
        DataReport report = dataset.report();
        assertEquals(1, report.endedAfterAnswer());
        assertEquals(2, report.records());
        assertTrue(report.toString().contains("1 had messages after the last answer (dropped)"), report.toString());
    }

    /** mistral-common refuses these shapes, and so does the mistral template, as before; skip_invalid counts them. */
    @Test
    void theMistralTemplateRefusesWhatMistralCommonRefusesNamingFileAndLine(@TempDir Path dir) throws IOException {
        Path file = write(dir, messages(message("user", "a"), message("user", "b"), message("assistant", "c")),
                messages(message("assistant", "a"), message("user", "b"), message("assistant", "c")),
                messages(message("user", ""), message("assistant", "b")),
                messages(message("user", "a"), message("assistant", "")),
                messages(message("user", "a"), message("assistant", "b"), message("assistant", "c")));
        List<String> problems = new ArrayList<>();
        for (int line = 1; line <= 5; line++) {
            Path one = dir.resolve("line" + line + ".jsonl");
            Files.write(one, List.of(Files.readAllLines(file).get(line - 1)));
            problems.add(assertThrows(InvalidRecordException.class,
                    () -> ChatDataset.load(List.of(one), List.of(), 0, 7, null, builder(), false)).getMessage());
        }
        assertEquals(List.of(
                dir.resolve("line1.jsonl") + ":1: message 2 is from the user but the assistant should speak there: two "
                        + "user messages in a row",
                dir.resolve("line2.jsonl") + ":1: message 1 is from the assistant but the user should speak there: the "
                        + "assistant speaks first",
                dir.resolve("line3.jsonl") + ":1: message 1 (user) is empty",
                dir.resolve("line4.jsonl") + ":1: message 2 (assistant) is empty",
                dir.resolve("line5.jsonl") + ":1: message 3 is from the assistant but the user should speak there: two "
                        + "assistant messages in a row"), problems);
        DataReport report = ChatDataset.load(List.of(file), List.of(), 0, 7, null, builder(), true).report();
        assertEquals(5, report.records());
        assertEquals(0, report.samples());
        assertEquals(Map.of("message N is from the user but the assistant should speak there", 1L,
                "message N is from the assistant but the user should speak there", 2L, "message N (user) is empty", 1L,
                "message N (assistant) is empty", 1L), report.skipped());
    }

    /**
     * The built-in ChatML takes what its Jinja (and so transformers) renders: two user turns in a row, two answers in
     * a row (each trained with its end marker), an empty answer (its end marker trained, as transformers' generation
     * mask trains the EOS of an empty answer: HfTemplateGoldenTest's last four lines).
     */
    @Test
    void chatMlTakesConsecutiveTurnsAndEmptyAnswersAsItsJinjaRendersThem(@TempDir Path dir) throws IOException {
        Path file = write(dir, messages(message("user", "a"), message("user", "b"), message("assistant", "c")),
                messages(message("user", "a"), message("assistant", "b"), message("assistant", "c")),
                messages(message("user", "a"), message("assistant", ""), message("user", "d"), message("assistant", "e")));
        SampleBuilder chatml = new SampleBuilder(new ChatMlTemplate(), tokenizer, 256, LossPolicy.ALL_ASSISTANT_TURNS);
        SampleBuilder jinja = new SampleBuilder(new HfChatTemplate(new JinjaChatTemplate("chatml", ChatMlTemplate.JINJA,
                "<s>", "</s>"), 1, 2), tokenizer, 256, LossPolicy.ALL_ASSISTANT_TURNS);
        List<TokenizedSample> samples = ChatDataset.load(List.of(file), List.of(), 0, 7, null, chatml, false).train();
        List<TokenizedSample> fromJinja = ChatDataset.load(List.of(file), List.of(), 0, 7, null, jinja, false).train();
        List<String> trained = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            assertArrayEquals(fromJinja.get(i).inputIds(), samples.get(i).inputIds(), "ids, line " + (i + 1));
            assertArrayEquals(fromJinja.get(i).labels(), samples.get(i).labels(), "labels, line " + (i + 1));
            long[] labels = samples.get(i).labels();
            trained.add(tokenizer.decode(Arrays.stream(labels).filter(id -> id != TokenizedSample.IGNORE).toArray()));
        }
        assertEquals(List.of("c<|im_end|>", "b<|im_end|>c<|im_end|>", "<|im_end|>e<|im_end|>"), trained);
    }

    /**
     * mistral, chatml and custom have no tools: a tool message, tool_calls or tools is refused naming the message and
     * pointing at the model's own template (HfTemplateGoldenTest's tool-call lines check that one against transformers).
     */
    @Test
    void theBuiltInTemplatesRefuseToolsNamingTheMessageAndTheTemplateToUse(@TempDir Path dir) throws IOException {
        Path file = write(dir, messages(message("user", "Weather?"), "{\"role\": \"assistant\", \"content\": \"\", "
                + "\"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"w\", \"arguments\": {}}}]}",
                message("tool", "sunny"), message("assistant", "Sunny.")),
                messages(message("user", "Weather?"), message("tool", "sunny"), message("assistant", "Sunny.")));
        CustomTemplate custom = new CustomTemplate(new CustomTemplateConfig("", "\n", "User: ", "\n", "Bot: ", "\n", "",
                true, true), 1, 2);
        for (ChatTemplate template : List.of(new MistralTemplate(1, 2), new ChatMlTemplate(), custom)) {
            SampleBuilder builder = new SampleBuilder(template, tokenizer, 256, LossPolicy.ALL_ASSISTANT_TURNS);
            InvalidRecordException e = assertThrows(InvalidRecordException.class,
                    () -> ChatDataset.load(List.of(file), List.of(), 0, 7, null, builder, false));
            assertEquals(file + ":1: message 2 (assistant) has tool_calls: the " + template.name() + " template has no "
                    + "tools; use the model's own template (data.template: hf), which renders them as transformers "
                    + "does", e.getMessage());
            DataReport report = ChatDataset.load(List.of(file), List.of(), 0, 7, null, builder, true).report();
            assertEquals(Map.of("message N (assistant) has tool_calls", 1L, "message N has the role tool", 1L),
                    report.skipped(), template.name());
        }
    }

    /**
     * Texts and prompt-completions count as chats do: a bad record is skipped and counted by reason under skip_invalid
     * (else it stops the run naming file:line), a prompt that fills max_seq_len is counted apart even without it (TRL
     * drops it too), a text cut at max_seq_len counts as a target cut.
     */
    @Test
    void textAndPromptCompletionRecordsAreCountedLikeChats(@TempDir Path dir) throws IOException {
        Path texts = Files.write(dir.resolve("texts.jsonl"), List.of("{\"text\": \"short\"}",
                "{\"text\": \"" + "long ".repeat(80).trim() + "\"}", "{\"text\": 3}"));
        InvalidRecordException stop = assertThrows(InvalidRecordException.class,
                () -> ChatDataset.load(List.of(texts), List.of(), 0, 7, null, builder(), false));
        assertEquals(texts + ":3: field text is not a string: 3", stop.getMessage());
        ChatDataset read = ChatDataset.load(List.of(texts), List.of(), 0, 7, null, builder(), true);
        assertEquals(2, read.train().size());
        assertEquals(48, read.train().get(1).length());
        assertEquals(48, read.train().get(1).targetCount(), "every token of a text trains");
        assertEquals(3, read.report().records());
        assertEquals(1, read.report().targetsCut());
        assertEquals(Map.of("field text is not a string", 1L), read.report().skipped());

        Path pairs = Files.write(dir.resolve("pairs.jsonl"), List.of("{\"prompt\": \"2+2=\", \"completion\": \" 4\"}",
                "{\"prompt\": \"" + "word ".repeat(60).trim() + "\", \"completion\": \" ok\"}"));
        DataReport report = ChatDataset.load(List.of(pairs), List.of(), 0, 7, ChatFormat.PROMPT_COMPLETION, builder(),
                false).report();
        assertEquals(1, report.samples());
        assertEquals(2, report.records());
        assertEquals(Map.of(SampleBuilder.NO_TARGET_LEFT, 1L), report.skipped());
    }
}
