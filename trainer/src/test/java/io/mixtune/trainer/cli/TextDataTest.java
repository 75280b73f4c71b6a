package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.trainer.Training;
import io.mixtune.trainer.run.TrainingResult;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * TRL's two other SFT dataset types end to end: the bundled language-modeling texts (data/samples/text.jsonl, format
 * detected) train a few packed steps on the tiny preset, and data preview shows what trains: every token of a text,
 * the completion of a prompt-completion record.
 */
class TextDataTest {
    @TempDir
    Path dir;

    private Path recipe(String data, String extra) throws IOException {
        return Files.writeString(dir.resolve("recipe.yaml"), """
                model:
                  preset: tiny-mixtral
                lora:
                  r: 4
                  alpha: 8
                  targets: [q_proj, v_proj]
                data:
                  files: [%s]
                  max_seq_len: 48
                %s
                train:
                  max_steps: 3
                  micro_batch_size: 2
                  lr: 3.0e-3
                output_dir: %s
                """.formatted(data, extra, dir.resolve("out")));
    }

    @Test
    void theBundledTextsTrainAFewPackedSteps() throws Exception {
        TrainingResult result = Training.load(recipe("data/samples/text.jsonl", "")).run();
        assertFalse(result.cancelled());
        assertEquals(3, result.steps());
        double first = result.lastStage().firstLoss();
        double last = result.lastStage().lastLoss();
        assertTrue(Double.isFinite(first) && Double.isFinite(last) && first > 0, first + " -> " + last);
        assertTrue(Files.isRegularFile(result.adapterDir().resolve("adapter_model.safetensors")));
    }

    /**
     * TRL's packing_strategy wrapped: the texts end to end, cut into rows of max_seq_len, train a few steps (each row
     * one sequence, attention across the texts in it).
     */
    @Test
    void wrappedTextsTrainAFewSteps() throws Exception {
        TrainingResult result = Training.load(recipe("data/samples/text.jsonl", "  packing_strategy: wrapped")).run();
        assertEquals(3, result.steps());
        assertTrue(Double.isFinite(result.lastStage().lastLoss()), String.valueOf(result.lastStage().lastLoss()));
    }

    /** `data preview` of the first {@code n} bundled texts packed by {@code strategy}, the rows dumped; exit 0. */
    private MixtuneCliTest.Result previewTexts(String strategy, int n, Path dump) throws IOException {
        MixtuneCliTest.Result preview = MixtuneCliTest.run("data", "preview", "--recipe",
                recipe("data/samples/text.jsonl", "  packing_strategy: " + strategy).toString(), "--n",
                String.valueOf(n), "--color", "never", "--dump", dump.toString());
        assertEquals(0, preview.code(), preview.err());
        return preview;
    }

    /**
     * A wrapped row is one sequence (TRL's collator without padding-free): the dump's legend says so, and no row drops
     * a label at a sample's start.
     */
    @Test
    void aWrappedDumpSaysEveryLabelIsKept() throws IOException {
        Path dump = dir.resolve("wrapped.jsonl");
        MixtuneCliTest.Result wrapped = previewTexts("wrapped", 4, dump);
        assertTrue(wrapped.out().contains("and their packed rows (one sequence a row: positions 0, 1, ... across it, "
                + "every label kept) to " + dump), wrapped.out());
        assertFalse(wrapped.out().contains("untrained"), wrapped.out());
    }

    /**
     * bfd_split keeps a text longer than max_seq_len whole (TRL truncates nothing it packs) and splits it across rows:
     * the preview shows every token trained, the rows hold every token, the data cache is another file.
     */
    @Test
    void previewWithBfdSplitKeepsEveryTokenAndPacksThemAll() throws IOException {
        Path dump = dir.resolve("rows.jsonl");
        MixtuneCliTest.Result split = previewTexts("bfd_split", 16, dump);
        Matcher first = Pattern.compile("text.jsonl:1\\): (\\d+) tokens, (\\d+) trained")
                .matcher(split.out());
        assertTrue(first.find(), split.out());
        assertTrue(Integer.parseInt(first.group(1)) > 48 && first.group(1).equals(first.group(2)), split.out());
        assertTrue(split.out().contains("rows of 48 tokens (bfd_split)"), split.out());
        assertTrue(split.out().contains("and their packed rows (positions restart at each sequence, whose first token "
                + "is untrained) to " + dump), split.out());
        ObjectMapper json = new ObjectMapper();
        long sampleTokens = 0;
        long rowTokens = 0;
        for (String line : Files.readAllLines(dump)) {
            JsonNode row = json.readTree(line);
            if (row.has("packed_row")) {
                for (JsonNode sample : row.get("sample_ids")) {
                    rowTokens += sample.asLong() >= 0 ? 1 : 0;
                }
            } else {
                sampleTokens += row.get("input_ids").size();
            }
        }
        assertEquals(sampleTokens, rowTokens, "every token of the 16 texts is in a row");
    }

    @Test
    void previewMarksEveryTokenOfATextAndTheCompletionOfAPrompt() throws IOException {
        MixtuneCliTest.Result text = MixtuneCliTest.run("data", "preview", "--recipe",
                recipe("data/samples/text.jsonl", "").toString(), "--n", "1", "--color", "never");
        assertEquals(0, text.code(), text.err());
        assertTrue(text.out().contains("data/samples/text.jsonl:1"), text.out());
        // 48 tokens, every one trained, the text cut keeping its start (its EOS cut off with the rest)
        assertTrue(text.out().contains("48 tokens, 48 trained"), text.out());
        assertTrue(text.out().contains("16 samples"), text.out());

        MixtuneCliTest.Result pairs = MixtuneCliTest.run("data", "preview", "--recipe",
                recipe("data/samples/prompt-completion.jsonl", "").toString(), "--n", "2", "--color", "never");
        assertEquals(0, pairs.code(), pairs.err());
        assertTrue(pairs.out().contains("Translate to French: Good morning, how are you?⟦"), pairs.out());
        assertTrue(pairs.out().contains("24 tokens, 11 trained")
                && pairs.out().contains("<s>The capital of Canada is⟦ Ottawa.</s>⟧"), pairs.out());

        MixtuneCliTest.Result inputs = MixtuneCliTest.run("data", "preview", "--recipe",
                recipe("data/samples/prompt-completion.jsonl", "  loss_on: train_on_inputs").toString(), "--n", "1",
                "--color", "never");
        assertEquals(0, inputs.code(), inputs.err());
        assertTrue(inputs.out().contains("24 tokens, 24 trained"), "train_on_inputs: the prompt trains too\n"
                + inputs.out());
    }
}
