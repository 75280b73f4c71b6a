package io.mixtune.data.preference;

import static io.mixtune.data.preference.PreferenceGoldens.BOS;
import static io.mixtune.data.preference.PreferenceGoldens.EOS;
import static io.mixtune.data.preference.PreferenceGoldens.longs;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.dataset.DataReport;
import io.mixtune.data.dataset.LabeledDataset;
import io.mixtune.data.preference.PreferenceTokenizer.Truncation;
import io.mixtune.data.template.ChatTemplate;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Unpaired examples read, unpaired and tokenized as TRL 1.13's KTOTrainer does (interop/make_kto_goldens.py runs
 * KTOTrainer._prepare_dataset and DataCollatorForUnpairedPreference at max_length 48, per_device_train_batch_size 3):
 * standard strings with the EOS TRL appends (not twice), conversational examples through the chat template, a paired
 * file unpaired (all chosen, then all rejected), examples whose prompt fills max_length dropped, longer rows cut at
 * the end, and the KL completions rotated by one within each batch.
 */
class KtoTokenizationGoldenTest {
    private static PreferenceGoldens goldens;
    private static TextTokenizer tokenizer;
    private static JsonNode golden;

    @TempDir
    Path dir;

    @BeforeAll
    static void open() throws IOException {
        goldens = PreferenceGoldens.open("trl-kto-tokenized.json");
        tokenizer = goldens.tokenizer;
        golden = goldens.golden;
    }

    @AfterAll
    static void close() {
        goldens.close();
    }

    @Test
    void examplesAreTrlsPromptCompletionAndKlIds() throws IOException {
        int maxLength = golden.get("max_length").asInt();
        int batchSize = golden.get("batch_size").asInt();
        int cases = 0;
        for (JsonNode c : golden.get("cases")) {
            String where = c.get("template").asText() + " " + c.get("name").asText();
            Path file = dir.resolve(c.get("template").asText() + "-" + c.get("name").asText() + ".jsonl");
            StringBuilder lines = new StringBuilder();
            c.get("records").forEach(r -> lines.append(r).append('\n'));
            Files.writeString(file, lines);
            PreferenceTokenizer tokenize = new PreferenceTokenizer(ChatTemplate.byName(c.get("template").asText(),
                    BOS, EOS), tokenizer, maxLength, EOS, Truncation.KEEP_START);
            DataReport report = new DataReport();
            List<LabeledSample> samples = LabeledDataset.read(List.of(file), tokenize, true, report);
            JsonNode examples = c.get("examples");
            assertEquals(examples.size(), samples.size(), where + ": examples kept");
            long[][] kl = LabeledSample.klCompletions(samples, batchSize);
            JsonNode collated = c.get("collated");
            for (int i = 0; i < samples.size(); i++) {
                JsonNode want = examples.get(i);
                LabeledSample sample = samples.get(i);
                String at = where + " example " + i;
                assertEquals(want.get("label").asBoolean(), sample.label(), at);
                assertArrayEquals(longs(want.get("prompt_ids")), sample.promptIds(), "prompt, " + at);
                long[] completion = longs(want.get("completion_ids"));
                assertArrayEquals(completion, sample.completionIds(), "completion, " + at);
                assertArrayEquals(longs(want.get("KL_completion_ids")), kl[i], "KL completion, " + at);
                assertEquals(sample.promptIds().length + completion.length > maxLength, sample.truncated(), at);
                // KL: TRL rotates the whole completions and its collator cuts the KL row at max_length.
                long[] klRow = row(collated.get("KL_input_ids").get(i), collated.get("KL_attention_mask").get(i));
                assertArrayEquals(klRow, sample.row(kl[i], maxLength), "KL row, " + at);
                long[] row = row(collated.get("input_ids").get(i), collated.get("attention_mask").get(i));
                assertArrayEquals(row, sample.row(sample.completionIds(), maxLength), "row, " + at);
            }
            cases++;
        }
        assertEquals(6, cases);
    }

    @Test
    void weightWarningIsTrlsWordsAndBounds() throws IOException {
        JsonNode standard = golden.get("cases").get(0);
        Path file = dir.resolve("standard.jsonl");
        StringBuilder lines = new StringBuilder();
        standard.get("records").forEach(r -> lines.append(r).append('\n'));
        Files.writeString(file, lines);
        List<LabeledSample> samples = LabeledDataset.read(List.of(file), new PreferenceTokenizer(ChatTemplate.byName(
                "mistral", BOS, EOS), tokenizer, golden.get("max_length").asInt(), EOS, Truncation.KEEP_START), true,
                new DataReport());
        for (JsonNode c : golden.get("weight_warnings")) {
            String warning = LabeledDataset.weightWarning(samples, c.get("desirable_weight").asDouble(),
                    c.get("undesirable_weight").asDouble());
            JsonNode trl = c.get("warnings");
            if (trl.isEmpty()) {
                assertEquals(null, warning);
            } else {
                assertEquals(trl.get(0).asText().replace("[RANK 0] ", ""), warning);
            }
        }
        assertEquals(null, LabeledDataset.weightWarning(samples, 0.4, 1.0), "desirable_weight in TRL's range");
    }

    @Test
    void promptFillingMaxLengthIsInvalidAsTrlDropsIt() throws IOException {
        int maxLength = golden.get("max_length").asInt();
        JsonNode standard = golden.get("cases").get(0);
        assertEquals("standard", standard.get("name").asText());
        Path file = dir.resolve("standard.jsonl");
        StringBuilder lines = new StringBuilder();
        standard.get("records").forEach(r -> lines.append(r).append('\n'));
        Files.writeString(file, lines);
        PreferenceTokenizer tokenize = new PreferenceTokenizer(ChatTemplate.byName("mistral", BOS, EOS), tokenizer,
                maxLength, EOS, Truncation.KEEP_START);
        List<InvalidRecordException> invalid = new ArrayList<>();
        for (LabeledCompletion example : LabeledFileReader.read(List.of(file), invalid::add)) {
            try {
                tokenize.tokenize(example);
            } catch (InvalidRecordException e) {
                invalid.add(e);
            }
        }
        assertEquals(1, invalid.size());
        assertEquals("prompt longer than max_seq_len", invalid.get(0).reason());
        assertTrue(invalid.get(0).source().endsWith("standard.jsonl:5"), invalid.get(0).source());
    }

    @Test
    void pairsAmongUnpairedExamplesAreInvalidWithTheirLine() throws IOException {
        Path file = dir.resolve("mixed.jsonl");
        Files.writeString(file, "{\"prompt\": \"a\", \"completion\": \" b\", \"label\": true}\n"
                + "{\"prompt\": \"a\", \"chosen\": \" b\", \"rejected\": \" c\"}\n"
                + "{\"prompt\": \"a\", \"completion\": \" b\", \"label\": \"yes\"}\n");
        List<InvalidRecordException> invalid = new ArrayList<>();
        List<LabeledCompletion> read = LabeledFileReader.read(List.of(file), invalid::add);
        assertEquals(1, read.size());
        assertEquals(2, invalid.size());
        assertTrue(invalid.get(0).getMessage().contains("mixed.jsonl:2"), invalid.get(0).getMessage());
        assertTrue(invalid.get(1).getMessage().contains("label must be true"), invalid.get(1).getMessage());
    }

    /** An SFT record among KTO's data is named for what it is not, not as a pair missing "chosen" (as before). */
    @Test
    void aRecordOfNeitherLayoutNamesBoth() throws IOException {
        Path file = Files.writeString(dir.resolve("text.jsonl"), "{\"text\": \"a story\"}\n");
        List<InvalidRecordException> invalid = new ArrayList<>();
        assertTrue(LabeledFileReader.read(List.of(file), invalid::add).isEmpty());
        assertEquals(1, invalid.size());
        assertTrue(invalid.get(0).getMessage().contains("text.jsonl:1: expected an unpaired example {prompt, "
                + "completion, label} or a preference pair {prompt, chosen, rejected}, got the fields [text]"),
                invalid.get(0).getMessage());
    }

    /** A collated row without its padding. */
    private static long[] row(JsonNode ids, JsonNode mask) {
        int length = 0;
        for (JsonNode m : mask) {
            length += m.asInt();
        }
        return java.util.Arrays.copyOf(longs(ids), length);
    }
}
