package io.mixtune.trainer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import ai.djl.Device;
import io.mixtune.trainer.grpo.RewardFunction;
import io.mixtune.trainer.reward.RewardScorer;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingResult;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * GRPO end to end through the Java API (recipes/quickstart-grpo.yaml on the tiny Mistral): a reward function written in
 * Java, which scores a completion by its share of even token ids, rises over the run; a run cancelled in the middle of
 * a generation batch (num_iterations 2, LoRA dropout on) and resumed equals the uninterrupted one exactly, and a changed
 * grpo key is refused on resume; a reward model folder (`mixtune reward`'s output) named in grpo.reward_funcs scores the
 * completions as the reward scorer does.
 */
class TrainGrpoTest {
    private static final Path QUICKSTART = Path.of("../recipes/quickstart-grpo.yaml");
    private static final ObjectMapper JSON = new ObjectMapper();

    /** The share of a completion's tokens whose id is even: something a random tiny model can learn to raise. */
    static final RewardFunction EVEN_TOKENS = batch -> batch.completionIds().stream()
            .map(ids -> {
                long even = java.util.Arrays.stream(ids).filter(id -> id % 2 == 0).count();
                return ids.length == 0 ? null : (double) even / ids.length;
            }).toList();

    private static Training training(Path dir, String... sets) {
        List<String> overrides = new ArrayList<>(List.of("output_dir=" + dir.resolve("out"),
                "data.files=[../data/samples/prompts.jsonl]"));
        overrides.addAll(List.of(sets));
        return Training.load(QUICKSTART, overrides.toArray(String[]::new)).rewardFunction("even_tokens", EVEN_TOKENS);
    }

    /** The resumed run's loss, reward, kl, grad_norm and clip ratio of each step and its adapter bytes: the whole's. */
    static void assertResumedRunEqualsWhole(Path whole, Path stopped) throws IOException {
        List<JsonNode> expected = records(whole);
        List<JsonNode> actual = records(stopped);
        assertEquals(expected.size(), actual.size());
        for (int i = 0; i < expected.size(); i++) {
            for (String name : List.of("loss", "reward", "kl", "grad_norm", "clip_ratio/region_mean")) {
                if (expected.get(i).has(name)) {
                    assertEquals(expected.get(i).get(name).doubleValue(), actual.get(i).get(name).doubleValue(), 0,
                            "step " + (i + 1) + " " + name);
                }
            }
        }
        assertArrayEquals(Files.readAllBytes(whole.resolve("out/adapter/adapter_model.safetensors")),
                Files.readAllBytes(stopped.resolve("out/adapter/adapter_model.safetensors")));
    }

    static List<JsonNode> records(Path dir) throws IOException {
        List<JsonNode> out = new ArrayList<>();
        for (String line : Files.readAllLines(dir.resolve("out/metrics.jsonl"))) {
            JsonNode record = JSON.readTree(line);
            if (record.has("loss")) {
                out.add(record);
            }
        }
        return out;
    }

    @Test
    void aRewardFunctionIsRefusedForAnotherMethod(@TempDir Path dir) {
        RuntimeException refused = assertThrows(RuntimeException.class, () -> Training.load(
                Path.of("../recipes/quickstart-kto.yaml"), "output_dir=" + dir.resolve("out"),
                "data.files=[../data/samples/preferences.jsonl]").rewardFunction("even_tokens", EVEN_TOKENS).run());
        assertTrue(refused.getMessage().contains("train.method must be grpo or rloo, got kto"), refused.getMessage());
    }

    @Test
    void aJavaRewardRisesOverTheRunAndTrlsMetricsAreLogged(@TempDir Path dir) throws IOException {
        List<Double> rewards = new ArrayList<>();
        TrainingResult result = training(dir, "train.max_steps=10", "grpo.max_completion_length=4", "train.lr=2e-2",
                "grpo.temperature=0.1", "train.micro_batch_size=8", "train.gradient_accumulation=1",
                "lora.targets=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head]")
                .listener(new TrainingListener() {
                    @Override
                    public void onStep(StepEnded step) {
                        rewards.add(((Number) step.metrics().get("rewards/even_tokens/mean")).doubleValue());
                    }
                }).run();
        assertEquals(10, result.steps());
        System.out.println("GRPO quickstart, rewards/even_tokens/mean by step: " + rewards);
        double first = rewards.subList(0, 4).stream().mapToDouble(x -> x).average().orElseThrow();
        double last = rewards.subList(6, 10).stream().mapToDouble(x -> x).average().orElseThrow();
        assertTrue(last > first + 0.05, "mean reward of the first 4 steps " + first + ", of the last 4 " + last);
        JsonNode record = records(dir).get(0);
        for (String name : List.of("completions/mean_length", "completions/clipped_ratio",
                "rewards/think_format_reward/mean", "rewards/even_tokens/mean", "rewards/even_tokens/std", "reward",
                "reward_std", "frac_reward_zero_std", "entropy", "clip_ratio/region_mean", "num_tokens")) {
            assertTrue(record.has(name), name + " in " + record);
        }
    }

    @Test
    void aRunCancelledInsideAGenerationBatchResumesToTheUninterruptedRunExactly(@TempDir Path dir) throws IOException {
        String[] sets = {"train.max_steps=4", "grpo.num_iterations=2", "lora.dropout=0.1", "grpo.beta=0.04",
                "grpo.max_completion_length=4", "train.save_every=0"};
        Path whole = dir.resolve("whole");
        training(whole, sets).run();
        Path stopped = dir.resolve("stopped");
        TrainingResult first = TrainingApiTest.runCancelledAfter(training(stopped, sets), 1);
        assertTrue(first.cancelled());
        TrainingResult second = training(stopped, sets).resume().run();
        assertEquals(4, second.steps());
        assertResumedRunEqualsWhole(whole, stopped);
        String[] changed = java.util.Arrays.copyOf(sets, sets.length + 1);
        changed[sets.length] = "grpo.epsilon=0.3";
        RuntimeException refused = assertThrows(RuntimeException.class,
                () -> training(stopped, changed).resume().run());
        assertTrue(refused.getMessage().contains("grpo.epsilon"), refused.getMessage());
    }

    /**
     * The CLI user's way to a reward a random tiny model earns: recipes/quickstart-reward.yaml trained first, its
     * output_dir/adapter named in grpo.reward_funcs. The logged rewards/adapter/mean of every step equals the mean of
     * what the reward scorer (`mixtune reward`'s) gives the same prompt + completion ids on the reward run's base, and
     * the scores vary within the batch (they give advantages).
     */
    @Test
    void aRewardModelFolderScoresTheCompletionsAsTheRewardScorerDoes(@TempDir Path dir) throws IOException {
        Path pairs = dir.resolve("pairs.jsonl");
        Files.write(pairs, Files.readAllLines(Path.of("../data/samples/preferences.jsonl")).subList(0, 8));
        Path rewardRun = dir.resolve("reward");
        Training.load(Path.of("../recipes/quickstart-reward.yaml"), "data.files=[" + pairs + "]",
                "data.validation_ratio=0", "train.max_steps=1", "train.warmup_steps=0", "train.save_every=0",
                "output_dir=" + rewardRun).run();
        Path adapter = rewardRun.resolve("adapter");
        List<RewardFunction.Batch> batches = new ArrayList<>();
        List<Map<String, Object>> steps = new ArrayList<>();
        TrainingResult result = Training.load(QUICKSTART, "output_dir=" + dir.resolve("grpo"),
                "data.files=[../data/samples/prompts.jsonl]", "grpo.reward_funcs=[" + adapter + "]",
                "train.max_steps=2", "grpo.max_completion_length=4", "train.micro_batch_size=8",
                "train.gradient_accumulation=1")
                .rewardFunction("seen", batch -> {
                    batches.add(batch);
                    return batch.completions().stream().map(text -> 0.0).toList();
                })
                .listener(new TrainingListener() {
                    @Override
                    public void onStep(StepEnded step) {
                        steps.add(step.metrics());
                    }
                }).run();
        assertEquals(2, result.steps());
        assertEquals(2, batches.size());
        try (RewardScorer scorer = RewardScorer.load(rewardRun.resolve("base-model"), adapter,
                Quantization.NONE.linears(), Device.cpu())) {
            for (int step = 0; step < 2; step++) {
                RewardFunction.Batch batch = batches.get(step);
                List<long[]> sequences = new ArrayList<>();
                for (int i = 0; i < batch.size(); i++) {
                    sequences.add(RewardScorer.concat(batch.promptIds().get(i), batch.completionIds().get(i)));
                }
                float[] scores = scorer.rewards(sequences, RewardScorer.DEFAULT_BATCH_SIZE);
                double mean = 0;
                for (float score : scores) {
                    assertTrue(Float.isFinite(score), "score " + score);
                    mean += score / (double) scores.length;
                }
                double logged = ((Number) steps.get(step).get("rewards/adapter/mean")).doubleValue();
                assertEquals(mean, logged, 1e-5 * Math.max(1, Math.abs(mean)), "step " + (step + 1));
                assertEquals(mean, ((Number) steps.get(step).get("reward")).doubleValue(),
                        1e-5 * Math.max(1, Math.abs(mean)), "step " + (step + 1) + " reward");
                assertTrue(((Number) steps.get(step).get("rewards/adapter/std")).doubleValue() > 0,
                        "the reward model's scores vary: " + steps.get(step));
            }
        }
    }
}
