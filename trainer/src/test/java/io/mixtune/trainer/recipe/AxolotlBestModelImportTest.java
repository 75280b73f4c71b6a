package io.mixtune.trainer.recipe;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `recipes import` of axolotl's early_stopping_patience, load_best_model_at_end, metric_for_best_model and
 * greater_is_better as its core/builders/causal.py passes them to transformers: early_stopping_patience alone turns
 * load_best_model_at_end on where there is validation data and save_steps is a multiple of eval_steps, and off
 * silently elsewhere (said in the import); greater_is_better false is not passed on.
 */
class AxolotlBestModelImportTest {
    @TempDir
    Path dir;

    private AxolotlImport.Result imported(String extra) throws IOException {
        Path config = Files.writeString(dir.resolve("config.yml"), """
                base_model: /models/mistral
                adapter: qlora
                datasets:
                  - path: chats.jsonl
                    type: chat_template
                """ + extra);
        return AxolotlImport.read(config);
    }

    @Test
    void earlyStoppingAloneLoadsTheBestWhereAxolotlDoes() throws IOException {
        AxolotlImport.Result result = imported("""
                val_set_size: 0.05
                eval_steps: 50
                save_steps: 100
                early_stopping_patience: 3
                metric_for_best_model: eval_loss
                greater_is_better: false
                """);
        assertEquals(3, result.values().get("train.early_stopping_patience"));
        assertEquals(true, result.values().get("train.load_best_model_at_end"));
        assertEquals("eval_loss", result.values().get("train.metric_for_best_model"));
        assertFalse(result.values().containsKey("train.greater_is_better"));
        assertTrue(result.notes().stream().anyMatch(note -> note.contains("greater_is_better: false is not passed")),
                result.notes().toString());
        assertEquals(List.of(), result.unmapped());
    }

    @Test
    void loadBestWithIncompatibleStepsIsUnmappedAndGreaterTrueIsKept() throws IOException {
        AxolotlImport.Result result = imported("""
                val_set_size: 0.05
                eval_steps: 40
                save_steps: 100
                load_best_model_at_end: true
                metric_for_best_model: rewards/accuracies
                greater_is_better: true
                early_stopping_patience: 0
                """);
        assertFalse(result.values().containsKey("train.load_best_model_at_end"));
        assertFalse(result.values().containsKey("train.early_stopping_patience"), "0 is no callback to axolotl");
        assertEquals(true, result.values().get("train.greater_is_better"));
        assertEquals("rewards/accuracies", result.values().get("train.metric_for_best_model"));
        assertTrue(String.join("\n", result.unmapped()).contains("load_best_model_at_end: true: axolotl turns it off "
                + "unless there is validation data and save_steps is a multiple of eval_steps"), result.unmapped()
                .toString());
    }

    /** greater_is_better alone: axolotl hands it to transformers, which compares nothing without a metric. */
    @Test
    void greaterIsBetterAloneIsNotedNotKept() throws IOException {
        AxolotlImport.Result result = imported("""
                val_set_size: 0.05
                greater_is_better: true
                """);
        assertFalse(result.values().containsKey("train.greater_is_better"));
        assertTrue(result.notes().stream().anyMatch(note -> note.contains("greater_is_better: true has no effect")),
                result.notes().toString());
        assertEquals(List.of(), result.unmapped());
    }
}
