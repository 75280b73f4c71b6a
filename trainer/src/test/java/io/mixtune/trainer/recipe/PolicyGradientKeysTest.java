package io.mixtune.trainer.recipe;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The grpo section's GSPO key, named at its line where its value is not TRL 1.13's. */
class PolicyGradientKeysTest {
    @TempDir
    Path dir;

    private Path recipe(String extra) throws IOException {
        Path prompts = Files.writeString(dir.resolve("prompts.jsonl"), "{\"prompt\": \"hi\"}\n");
        return Files.writeString(dir.resolve("r.yaml"), "model:\n  preset: tiny-mistral\ndata:\n  files: [" + prompts
                + "]\ntrain:\n  method: grpo\noutput_dir: " + dir.resolve("out") + "\n" + extra);
    }

    private static String error(Path recipe, String... sets) {
        return assertThrows(RecipeException.class, () -> RecipeReader.read(recipe, List.of(sets))).getMessage();
    }

    @Test
    void importanceSamplingLevelIsTokenOrSequence() throws IOException {
        assertEquals("token", RecipeReader.read(recipe(""), List.of()).recipe().grpo().importanceSamplingLevel());
        Recipe gspo = RecipeReader.read(recipe("grpo:\n  importance_sampling_level: sequence\n"), List.of()).recipe();
        assertTrue(gspo.grpo().sequenceLevel());
        Path bad = recipe("grpo:\n  importance_sampling_level: sequence_token\n");
        String message = error(bad);
        assertTrue(message.contains(bad + ":9: grpo.importance_sampling_level: expected token or sequence (GSPO), as "
                + "TRL 1.13, got sequence_token"), message);
        String luspo = error(recipe(""), "grpo.loss_type=luspo");
        assertTrue(luspo.contains("grpo.loss_type: expected one of") && luspo.contains("luspo is not offered"), luspo);
    }
}
