package io.mixtune.trainer.grpo;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.trainer.recipe.RecipeValueException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

/**
 * A grpo.reward_funcs entry that names a folder which is not a reward model of `mixtune reward` is refused naming the
 * key (mixtune validate's check too, where the folder is not loaded), not left to fail deep in the model's loading.
 */
class RewardFunctionsTest {
    @Test
    void aFolderWithoutAnAdapterIsRefusedNamingTheKey() {
        RecipeValueException refused = assertThrows(RecipeValueException.class,
                () -> RewardFunctions.of("../data/samples", "grpo.reward_funcs[0]", folder -> null));
        assertTrue(refused.getMessage().contains("grpo.reward_funcs[0]")
                && refused.getMessage().contains("adapter_config.json"), refused.getMessage());
    }

    @Test
    void aFolderTheScorerRefusesIsRefusedNamingTheKey() {
        Path causalLmAdapter = Path.of("../lora/src/test/resources/golden/peft/peft-attention");
        assertTrue(Files.isRegularFile(causalLmAdapter.resolve("adapter_config.json")));
        RecipeValueException refused = assertThrows(RecipeValueException.class,
                () -> RewardFunctions.of(causalLmAdapter.toString(), "grpo.reward_funcs[1]", folder -> {
                    throw new IllegalArgumentException("adapter_model.safetensors has no score head");
                }));
        assertTrue(refused.getMessage().contains("grpo.reward_funcs[1]")
                && refused.getMessage().contains("no score head"), refused.getMessage());
    }
}
