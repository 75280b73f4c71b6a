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
    /**
     * Every key of TRL 1.13's RLOOConfig (its own fields, TrainingArguments' left out but learning_rate, whose default
     * it overrides) is taken under rloo or refused by name with what to do: none is an "unknown key".
     */
    @Test
    void everyRlooConfigKeyIsTakenOrRefusedByName() throws IOException {
        List<String> trlKeys = List.of("beta", "cache_implementation", "chat_template_kwargs", "disable_dropout",
                "ds3_gather_for_generation", "epsilon", "epsilon_high", "generation_batch_size", "generation_kwargs",
                "learning_rate", "log_completions", "log_multimodal", "log_unique_prompts",
                "mask_truncated_completions", "max_completion_length", "min_p", "model_init_kwargs",
                "normalize_advantages", "num_completions_to_print", "num_generations", "num_generations_eval",
                "num_iterations", "pad_to_multiple_of", "ref_model_mixup_alpha", "ref_model_sync_steps",
                "repetition_penalty", "reward_clip_range", "reward_weights", "router_aux_loss_coef", "shuffle_dataset",
                "steps_per_generation", "sync_ref_model", "temperature", "top_k", "top_p",
                "transformers_continuous_batching_config", "trust_remote_code", "use_transformers_continuous_batching",
                "use_transformers_paged", "use_vllm", "vllm_enable_sleep_mode", "vllm_gpu_memory_utilization",
                "vllm_group_port", "vllm_max_model_length", "vllm_mode", "vllm_model_impl", "vllm_server_base_url",
                "vllm_server_host", "vllm_server_port", "vllm_server_timeout", "vllm_structured_outputs_regex",
                "vllm_tensor_parallel_size");
        List<String> taken = java.util.Arrays.stream(RlooConfig.class.getRecordComponents())
                .map(c -> c.getName().replaceAll("([A-Z])", "_$1").toLowerCase(java.util.Locale.ROOT)).toList();
        StringBuilder section = new StringBuilder("rloo:\n");
        List<String> refused = trlKeys.stream().filter(k -> !taken.contains(k)).toList();
        refused.forEach(k -> section.append("  ").append(k).append(": null\n"));
        String message = error(recipe("rloo", section.toString()));
        for (String key : refused) {
            assertTrue(message.contains("rloo." + key + ": not offered: "), key + " in " + message);
        }
    }

    /**
     * The other method's section is never read: a grpo key in an rloo recipe (and an rloo key in a grpo recipe) is
     * refused at its line, naming the section that is read; the defaults' own sections are no problem.
     */
    @Test
    void theOtherPolicyGradientMethodsSectionIsRefusedByName() throws IOException {
        Path grpoInRloo = recipe("rloo", "grpo:\n  beta: 0.1\n  scale_rewards: none\n");
        String message = error(grpoInRloo);
        assertTrue(message.contains(grpoInRloo + ":9: grpo.beta: is read by train.method grpo only, and this recipe's "
                + "is rloo: put it under rloo (rloo.beta)"), message);
        assertTrue(message.contains(grpoInRloo + ":10: grpo.scale_rewards: is read by train.method grpo only, and "
                + "this recipe's is rloo: RLOOConfig has no such key: drop it"), message);
        Path rlooInGrpo = recipe("grpo", "rloo:\n  normalize_advantages: true\n");
        String refused = error(rlooInGrpo);
        assertTrue(refused.contains(rlooInGrpo + ":9: rloo.normalize_advantages: is read by train.method rloo only, "
                + "and this recipe's is grpo: GRPOConfig has no such key: drop it"), refused);
        String set = error(recipe("rloo", ""), "grpo.num_generations=4");
        assertTrue(set.contains("grpo.num_generations: is read by train.method grpo only, and this recipe's is rloo: "
                + "put it under rloo (rloo.num_generations)"), set);
        RecipeReader.read(recipe("rloo", "rloo:\n  beta: 0.1\n"), List.of());
        RecipeReader.read(recipe("grpo", "grpo:\n  beta: 0.1\n"), List.of());
    }

    /**
     * A run's recipe.yaml holds both sections, the one not read at its defaults: it reads back to the same recipe (as
     * RecipeReaderTest#aShortRecipeGetsEveryDefault holds for SFT), and so does a section that sets only defaults.
     */
    @Test
    void theOtherSectionAtItsDefaultsIsNoProblem() throws IOException {
        for (String quickstart : List.of("quickstart-rloo", "quickstart-grpo")) {
            Recipe recipe = RecipeReader.read(Path.of("../recipes/" + quickstart + ".yaml"), List.of()).recipe();
            Path resolved = Files.writeString(dir.resolve(quickstart + "-resolved.yaml"), RecipeReader.toYaml(recipe));
            assertEquals(recipe, RecipeReader.read(resolved, List.of()).recipe(), quickstart);
        }
        RecipeReader.read(recipe("rloo", "grpo:\n  beta: 0.0\n  scale_rewards: group\n"), List.of());
        RecipeReader.read(recipe("grpo", "rloo:\n  num_generations: 2\n  normalize_advantages: false\n"), List.of());
    }

    /** RLOO's refusals of keys it shares with GRPOConfig speak of RLOO, not GRPO. */
    @Test
    void rloosRefusalsNameRloo() throws IOException {
        String message = error(recipe("rloo", "rloo:\n  learning_rate: 1.0e-6\n  num_generations_eval: 2\n"));
        assertTrue(message.contains("rloo.learning_rate: not offered: it is train.lr (TRL's RLOO default is 1e-6)"),
                message);
        assertTrue(message.contains("rloo.num_generations_eval: not offered: RLOO runs no evaluation"), message);
        assertTrue(!message.contains("GRPO"), message);
    }

    @Test
    void anRlooRecipeThatTracksTheBestModelIsRefusedUnderItsMethod() throws IOException {
        String message = error(recipe("rloo", ""), "train.early_stopping_patience=2");
        assertTrue(message.contains("train.early_stopping_patience: compares evaluations, and train.method rloo "
                + "evaluates nothing"), message);
    }
}
