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

/**
 * The grpo section's GSPO key and the rloo section (RLOOConfig's keys and defaults), each bad value named at its line,
 * and the keys TRL has that mixtune does not build refused by name.
 */
class PolicyGradientKeysTest {
    @TempDir
    Path dir;

    private Path recipe(String extra) throws IOException {
        return recipe("grpo", extra);
    }

    private Path recipe(String method, String extra) throws IOException {
        Path prompts = Files.writeString(dir.resolve("prompts.jsonl"), "{\"prompt\": \"hi\"}\n");
        return Files.writeString(dir.resolve("r.yaml"), "model:\n  preset: tiny-mistral\ndata:\n  files: [" + prompts
                + "]\ntrain:\n  method: " + method + "\noutput_dir: " + dir.resolve("out") + "\n" + extra);
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

    @Test
    void rlooTakesRloosConfigKeysAndDefaultsAndRefusesTheOthersByName() throws IOException {
        Recipe recipe = RecipeReader.read(recipe("rloo", ""), List.of()).recipe();
        assertEquals(0.05, recipe.rloo().beta());
        assertEquals(2, recipe.rloo().numGenerations());
        assertEquals(null, recipe.rloo().rewardClipRange());
        assertTrue(recipe.train().readsPrompts());
        assertEquals("rloo", recipe.policyGradientSection());
        assertEquals(0.05, recipe.policyGradient().beta());
        Recipe clipped = RecipeReader.read(recipe("rloo", "rloo:\n  reward_clip_range: [-1, 2]\n"
                + "  normalize_advantages: true\n"), List.of()).recipe();
        assertEquals(List.of(-1.0, 2.0), clipped.rloo().rewardClipRange());
        assertTrue(clipped.rloo().normalizeAdvantages());
        Path bad = recipe("rloo", "rloo:\n  reward_clip_range: [2, 1]\n  num_generations: 1\n  use_vllm: true\n"
                + "  loss_type: dapo\n");
        String message = error(bad);
        assertTrue(message.contains(bad + ":9: rloo.reward_clip_range: expected [min, max] with min <= max, or null, "
                + "got [2.0, 1.0]"), message);
        assertTrue(message.contains(bad + ":10: rloo.num_generations: must be >= 2"), message);
        assertTrue(message.contains(bad + ":11: rloo.use_vllm: not offered: mixtune samples with its own generator"),
                message);
        assertTrue(message.contains(bad + ":12: rloo.loss_type: not offered: RLOOConfig has no such key (it is "
                + "GRPO's: train.method grpo)"), message);
    }
}
