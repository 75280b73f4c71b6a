package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.trainer.Training;
import io.mixtune.trainer.run.TrainingResult;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
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
