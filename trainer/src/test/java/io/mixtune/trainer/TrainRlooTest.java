package io.mixtune.trainer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.trainer.run.TrainingResult;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * RLOO (train.method rloo, recipes/quickstart-rloo.yaml) and GSPO (grpo.importance_sampling_level sequence, the GRPO
 * quickstart) end to end on the tiny Mistral, kept to a few short steps: an RLOO run with the KL in the reward (beta >
 * 0, the reference pass) and num_iterations 2 logs TRL's RLOO metrics, and cancelled inside a generation batch it
 * resumes to the uninterrupted run's every figure and adapter bytes; a changed rloo key is refused on resume. A GSPO
 * run trains and logs its clip ratios.
 */
class TrainRlooTest {
    private static final Path QUICKSTART = Path.of("../recipes/quickstart-rloo.yaml");
    private static final Path GRPO_QUICKSTART = Path.of("../recipes/quickstart-grpo.yaml");

    private static Training training(Path dir, String... sets) {
        return training(QUICKSTART, dir, sets);
    }

    private static Training training(Path recipe, Path dir, String... sets) {
        List<String> overrides = new ArrayList<>(List.of("output_dir=" + dir.resolve("out"),
                "data.files=[../data/samples/prompts.jsonl]", "train.micro_batch_size=4",
                "train.gradient_accumulation=1", "train.save_every=0"));
        overrides.addAll(List.of(sets));
        return Training.load(recipe, overrides.toArray(String[]::new))
                .rewardFunction("even_tokens", TrainGrpoTest.EVEN_TOKENS);
    }

    private static List<JsonNode> records(Path dir) throws IOException {
        return TrainGrpoTest.records(dir);
    }

    @Test
    void anRlooRunLogsTrlsMetricsAndResumesInsideAGenerationBatchExactly(@TempDir Path dir) throws IOException {
        String[] sets = {"train.method=rloo", "train.max_steps=3", "rloo.num_iterations=2", "rloo.beta=0.05",
            "rloo.max_completion_length=4", "rloo.num_generations=4", "rloo.reward_funcs=[think_format_reward]",
            "lora.dropout=0.1"};
        Path whole = dir.resolve("whole");
        List<String> notes = new ArrayList<>();
        assertEquals(3, training(whole, sets).listener(new io.mixtune.trainer.run.TrainingListener() {
            @Override
            public void onNote(String line) {
                notes.add(line);
            }
        }).run().steps());
        // the plan's header describes the rloo section, not the quickstart's grpo one (beta 0, 12 tokens)
        assertTrue(notes.stream().anyMatch(n -> n.startsWith("RLOO: leave-one-out advantages, the KL in the reward, "
                + "4 completions per prompt of at most 4 tokens, temperature 1.0, beta 0.05 (reference: the base, "
                + "adapter off), normalize_advantages false")), "" + notes);
        List<JsonNode> expected = records(whole);
        JsonNode first = expected.get(0);
        for (String name : List.of("completions/mean_length", "kl", "rewards/even_tokens/mean",
                "rewards/think_format_reward/mean", "reward", "reward_std", "frac_reward_zero_std", "entropy",
                "clip_ratio/low_mean", "clip_ratio/low_min", "clip_ratio/high_mean", "clip_ratio/high_max",
                "clip_ratio/region_mean", "num_tokens")) {
            assertTrue(first.has(name), name + " in " + first);
        }
        assertFalse(expected.get(1).has("reward"), "step 2 trains on step 1's generation batch: " + expected.get(1));
        // the adapter starts as the reference (LoRA's B is 0): its KL is 0 at step 1, not after training
        assertEquals(0, first.get("kl").doubleValue(), 0);
        assertTrue(first.get("grad_norm").doubleValue() > 0, "advantages that train: " + first);
        assertTrue(expected.get(2).get("kl").doubleValue() != 0, "" + expected.get(2));
        Path stopped = dir.resolve("stopped");
        TrainingResult cancelled = TrainingApiTest.runCancelledAfter(training(stopped, sets), 1);
        assertTrue(cancelled.cancelled());
        assertEquals(3, training(stopped, sets).resume().run().steps());
        TrainGrpoTest.assertResumedRunEqualsWhole(whole, stopped);
        String[] changed = java.util.Arrays.copyOf(sets, sets.length + 1);
        changed[sets.length] = "rloo.normalize_advantages=true";
        RuntimeException refused = assertThrows(RuntimeException.class,
                () -> training(stopped, changed).resume().run());
        assertTrue(refused.getMessage().contains("rloo.normalize_advantages"), refused.getMessage());
    }

    @Test
    void aGspoRunTrainsWithSequenceLevelRatios(@TempDir Path dir) throws IOException {
        TrainingResult result = training(GRPO_QUICKSTART, dir, "train.max_steps=2", "grpo.num_iterations=2",
                "grpo.importance_sampling_level=sequence", "grpo.loss_type=grpo", "grpo.epsilon=3e-4",
                "grpo.epsilon_high=4e-4", "grpo.max_completion_length=3").run();
        assertEquals(2, result.steps());
        JsonNode second = records(dir).get(1);
        assertTrue(Double.isFinite(second.get("loss").doubleValue()) && second.has("clip_ratio/region_mean"),
                "" + second);
    }
    @Test
    void tooFewPromptsForAStepNameTheRlooKey(@TempDir Path dir) throws IOException {
        Path prompts = java.nio.file.Files.writeString(dir.resolve("one.jsonl"), "{\"prompt\": \"hi\"}\n");
        RuntimeException refused = assertThrows(RuntimeException.class, () -> training(dir, "train.method=rloo",
                "data.files=[" + prompts + "]", "rloo.num_generations=2").run());
        assertTrue(refused.getMessage().contains("1 prompts: a step takes 2 (train.micro_batch_size x "
                + "gradient_accumulation / rloo.num_generations)"), refused.getMessage());
    }
}
