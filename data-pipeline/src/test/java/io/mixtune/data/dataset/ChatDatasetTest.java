package io.mixtune.data.dataset;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.data.chat.InvalidRecordException;
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
        lines.add("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}"); // line 21: ends with the user
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
        assertEquals(Map.of("the last message is from the user", 1L, "malformed JSON", 1L,
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
        assertTrue(e.getMessage().startsWith(file + ":21: the last message is from the user"), e.getMessage());
    }
}
