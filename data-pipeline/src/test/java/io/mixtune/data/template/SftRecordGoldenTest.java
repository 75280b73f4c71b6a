package io.mixtune.data.template;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.batch.PackedRow;
import io.mixtune.data.batch.PackingStrategy;
import io.mixtune.data.batch.SamplePacker;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.chat.PlainText;
import io.mixtune.data.chat.SftRecord;
import io.mixtune.data.read.ChatFormat;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Language-modeling and prompt-completion records tokenized as TRL 1.13's SFTTrainer does
 * (interop/make_sft_data_goldens.py runs TRL's own SFTTrainer._prepare_dataset, and DataCollatorForLanguageModeling
 * padding-free on its packed rows):
 * BOS and EOS on a text, the completion mask of a standard and a conversational prompt-completion, keep_start
 * truncation at max_length 64, the drop of a record whose prompt fills it, and the packed row's labels and positions;
 * and TRL's other packing strategies, bfd_split and wrapped, on whole datasets.
 */
class SftRecordGoldenTest {
    private static final long BOS = 1;
    private static final long EOS = 2;
    private static TextTokenizer tokenizer;
    private static JsonNode golden;
    private static JsonNode packed;

    @BeforeAll
    static void open() throws IOException {
        tokenizer = TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, BOS, EOS);
        try (InputStream in = SftRecordGoldenTest.class.getClassLoader()
                .getResourceAsStream("golden/sft-data/trl-prepared.json")) {
            golden = new ObjectMapper().readTree(in);
        }
        try (InputStream in = SftRecordGoldenTest.class.getClassLoader()
                .getResourceAsStream("golden/sft-data/trl-packed.json")) {
            packed = new ObjectMapper().readTree(in);
        }
    }

    @AfterAll
    static void close() {
        tokenizer.close();
    }

    @Test
    void samplesAreTrlsIdsAndLabelsCutKeepingTheStart() {
        int maxLength = golden.get("max_length").asInt();
        int cut = 0;
        int dropped = 0;
        for (JsonNode c : golden.get("cases")) {
            String where = c.get("template").asText() + " " + c.get("name").asText();
            SftRecord record = record(c, where);
            SampleBuilder builder = builder(c, maxLength, LossPolicy.ALL_ASSISTANT_TURNS);
            JsonNode unpacked = c.get("unpacked");
            if (!unpacked.get("kept").asBoolean()) {
                InvalidRecordException e = assertThrows(InvalidRecordException.class, () -> builder.build(record),
                        where);
                assertEquals(SampleBuilder.NO_TARGET_LEFT, e.reason(), where);
                dropped++;
                continue;
            }
            SampleBuilder.Built built = builder.build(record);
            assertArrayEquals(longs(unpacked.get("input_ids")), built.sample().inputIds(), "ids, " + where);
            assertArrayEquals(longs(unpacked.get("labels")), built.sample().labels(), "labels, " + where);
            boolean wasCut = built.fit() == SampleBuilder.Fit.TARGET_CUT;
            assertEquals(built.sample().length() == maxLength && wasCut, wasCut, where);
            cut += wasCut ? 1 : 0;
        }
        assertTrue(cut >= 4 && dropped >= 2, "the golden covers cuts (" + cut + ") and drops (" + dropped + ")");
    }

    @Test
    void packedRowsAreTrlsPaddingFreeCollation() {
        int maxLength = golden.get("max_length").asInt();
        for (JsonNode c : golden.get("cases")) {
            JsonNode packed = c.get("packed");
            if (!packed.get("kept").asBoolean() || !c.get("unpacked").get("kept").asBoolean()) {
                continue; // TRL's bfd keeps a record with nothing to learn (no loss); mixtune drops it (see README)
            }
            String where = c.get("template").asText() + " " + c.get("name").asText();
            SampleBuilder.Built built = builder(c, maxLength, LossPolicy.ALL_ASSISTANT_TURNS).build(record(c, where));
            PackedRow row = new SamplePacker(maxLength, EOS).row(List.of(built.sample()));
            int n = row.realTokens();
            assertArrayEquals(longs(packed.get("input_ids")), Arrays.copyOf(row.inputIds(), n), "ids, " + where);
            assertArrayEquals(longs(packed.get("labels")), Arrays.copyOf(row.labels(), n), "labels, " + where);
            assertArrayEquals(longs(packed.get("position_ids")), Arrays.copyOf(row.positionIds(), n),
                    "positions, " + where);
        }
    }

    /**
     * A conversational prompt-completion through a model's own Jinja (data.template auto or hf; here the two Jinja
     * templates TRL rendered) is the same sample as through the built-in template.
     */
    @Test
    void conversationalRecordsThroughTheModelsJinjaAreTrlsToo() {
        int maxLength = golden.get("max_length").asInt();
        int checked = 0;
        for (JsonNode c : golden.get("cases")) {
            String name = c.get("name").asText();
            if (!name.startsWith("conversational") || !c.get("unpacked").get("kept").asBoolean()) {
                continue;
            }
            String template = c.get("template").asText();
            String where = template + " " + name + " (jinja)";
            JinjaChatTemplate jinja = new JinjaChatTemplate(template, template.equals("mistral") ? MistralTemplate.JINJA
                    : ChatMlTemplate.JINJA, "<s>", "</s>");
            SampleBuilder builder = new SampleBuilder(new HfChatTemplate(jinja, BOS, EOS), tokenizer, maxLength,
                    LossPolicy.ALL_ASSISTANT_TURNS);
            TokenizedSample sample = builder.build(record(c, where)).sample();
            assertArrayEquals(longs(c.get("unpacked").get("input_ids")), sample.inputIds(), "ids, " + where);
            assertArrayEquals(longs(c.get("unpacked").get("labels")), sample.labels(), "labels, " + where);
            checked++;
        }
        assertEquals(7, checked);
    }

    @Test
    void trainOnInputsIsTrlsCompletionOnlyLossOff() {
        for (JsonNode c : golden.get("cases")) {
            JsonNode unpacked = c.get("unpacked");
            if (!unpacked.get("kept").asBoolean()) {
                continue;
            }
            String where = c.get("template").asText() + " " + c.get("name").asText();
            SampleBuilder.Built built = builder(c, golden.get("max_length").asInt(), LossPolicy.TRAIN_ON_INPUTS)
                    .build(record(c, where));
            assertArrayEquals(longs(unpacked.get("input_ids")), built.sample().labels(), where);
        }
    }

    /**
     * TRL's packing strategies bfd_split and wrapped, row by row (trl-packed.json: _prepare_dataset with packing on,
     * then DataCollatorForLanguageModeling as SFTTrainer sets it up for the strategy): texts, standard and
     * conversational prompt-completions longer than a row of 24 tokens, split where TRL splits them and binned best
     * fit as TRL bins them; ids, labels (which tokens train, and the first token of each piece not) and positions
     * (restarting per piece, or running across a wrapped row).
     */
    @Test
    void bfdSplitAndWrappedRowsAreTrlsPackedAndCollatedRows() {
        int rowLength = packed.get("max_length").asInt();
        int checked = 0;
        for (JsonNode c : packed.get("cases")) {
            if (c.get("name").asText().equals("many")) {
                continue;
            }
            String where = c.get("template").asText() + " " + c.get("name").asText() + " " + c.get("strategy").asText();
            PackingStrategy strategy = PackingStrategy.byKey(c.get("strategy").asText());
            SampleBuilder builder = wholeSamples(c.get("template").asText());
            List<TokenizedSample> samples = new ArrayList<>();
            int overflowing = 0;
            for (JsonNode name : c.get("records")) {
                JsonNode record = packed.get("records").get(name.asText());
                TokenizedSample sample = builder.build(ChatFormat.detect(record, "text").record(record, where,
                        "text")).sample();
                overflowing += sample.length() > rowLength ? 1 : 0;
                samples.add(sample);
            }
            assertTrue(overflowing >= 1, where + ": a record longer than a row");
            List<PackedRow> rows = strategy.pack(samples, rowLength, EOS);
            JsonNode expected = c.get("rows");
            assertEquals(expected.size(), rows.size(), "rows, " + where);
            assertEquals(expected.size(), strategy.rowCount(samples, rowLength), "row count, " + where);
            for (int r = 0; r < rows.size(); r++) {
                PackedRow row = rows.get(r);
                JsonNode trl = expected.get(r);
                int n = row.realTokens();
                String at = where + " row " + r;
                assertArrayEquals(longs(trl.get("input_ids")), Arrays.copyOf(row.inputIds(), n), "ids, " + at);
                assertArrayEquals(longs(trl.get("labels")), Arrays.copyOf(row.labels(), n), "labels, " + at);
                assertArrayEquals(longs(trl.get("position_ids")), Arrays.copyOf(row.positionIds(), n),
                        "positions, " + at);
                assertArrayEquals(sequenceLengths(trl, n), runs(row.sampleIds(), n), "sequences, " + at);
                for (int t = n; t < rowLength; t++) {
                    assertEquals(-1, row.sampleIds()[t], at);
                    assertEquals(TokenizedSample.IGNORE, row.labels()[t], at);
                }
            }
            checked++;
        }
        assertEquals(8, checked);
    }

    /** TRL packs datasets.map's batches of 1,000 examples each on its own: a short row ends each batch. */
    @Test
    void samplesArePackedInTrlsBatchesOfAThousand() {
        int rowLength = packed.get("max_length").asInt();
        SampleBuilder builder = wholeSamples("mistral");
        for (JsonNode c : packed.get("cases")) {
            if (!c.get("name").asText().equals("many")) {
                continue;
            }
            List<TokenizedSample> samples = new ArrayList<>();
            for (int i = 0; i < c.get("records").asInt(); i++) {
                samples.add(builder.build(new PlainText("Note " + i + ": " + "ab ".repeat(i % 9), "many:" + i))
                        .sample());
            }
            PackingStrategy strategy = PackingStrategy.byKey(c.get("strategy").asText());
            List<PackedRow> rows = strategy.pack(samples, rowLength, EOS);
            assertArrayEquals(longs(c.get("row_lengths")), rows.stream().mapToLong(PackedRow::realTokens).toArray(),
                    c.get("strategy").asText());
            assertEquals(rows.size(), strategy.rowCount(samples, rowLength));
        }
    }

    /** A sample as DataConfig.sampleLength leaves it for bfd_split and wrapped: whole. */
    private static SampleBuilder wholeSamples(String template) {
        return new SampleBuilder(ChatTemplate.byName(template, BOS, EOS), tokenizer, Integer.MAX_VALUE,
                LossPolicy.ALL_ASSISTANT_TURNS);
    }

    /** TRL's seq_lengths, or for wrapped (none) the row as one sequence. */
    private static long[] sequenceLengths(JsonNode row, int length) {
        return row.has("seq_lengths") ? longs(row.get("seq_lengths")) : new long[] {length};
    }

    /** The lengths of the runs of equal sample ids in the first n tokens. */
    private static long[] runs(long[] sampleIds, int n) {
        List<Long> runs = new ArrayList<>();
        for (int t = 0; t < n; t++) {
            if (t == 0 || sampleIds[t] != sampleIds[t - 1]) {
                runs.add(0L);
            }
            runs.set(runs.size() - 1, runs.get(runs.size() - 1) + 1);
        }
        return runs.stream().mapToLong(Long::longValue).toArray();
    }

    private static SftRecord record(JsonNode c, String where) {
        JsonNode record = c.get("record");
        ChatFormat format = ChatFormat.detect(record, "text");
        assertEquals(c.get("name").asText().startsWith("text") ? ChatFormat.TEXT : ChatFormat.PROMPT_COMPLETION,
                format, where);
        return format.record(record, where, "text");
    }

    private static SampleBuilder builder(JsonNode c, int maxSeqLen, LossPolicy policy) {
        return new SampleBuilder(ChatTemplate.byName(c.get("template").asText(), BOS, EOS), tokenizer, maxSeqLen,
                policy);
    }

    private static long[] longs(JsonNode array) {
        long[] values = new long[array.size()];
        for (int i = 0; i < values.length; i++) {
            values[i] = array.get(i).asLong();
        }
        return values;
    }
}
