package io.mixtune.trainer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.trainer.run.MetricsLog;
import io.mixtune.trainer.run.TrainingCheckpoint;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * TRL's num_tokens (SFTTrainer, DPOTrainer and RewardTrainer log it): the real tokens the run has read, cumulative, so
 * each step's value is the sum of the per-step {@code tokens} so far. It lives in the checkpoint's state, so a run
 * cancelled and resumed logs the same values as one that ran through.
 */
class NumTokensTest {
    /** TrainingApiTest's run (dropout on, EMA and LaWA kept) cut to 4 steps without validation, to stay fast. */
    private static final String[] SHORT = {"train.max_steps=4", "data.validation_ratio=0"};

    @TempDir
    Path dir;

    private static List<JsonNode> steps(Path metrics) {
        return MetricsLog.read(metrics).stream().filter(r -> r.has("loss")).toList();
    }

    @Test
    void numTokensIsTheRunningSumOfTokensAndSurvivesResume() throws Exception {
        Path whole = Files.createDirectories(dir.resolve("whole"));
        Training.load(TrainingApiTest.recipe(whole), SHORT).run();
        List<JsonNode> uninterrupted = steps(whole.resolve("out/metrics.jsonl"));
        assertEquals(4, uninterrupted.size());
        long sum = 0;
        for (JsonNode record : uninterrupted) {
            sum += record.get("tokens").asLong();
            assertEquals(sum, record.get("num_tokens").asLong(), record.toString());
        }
        assertTrue(sum > 4, "tokens were read: " + sum);

        Path cut = Files.createDirectories(dir.resolve("cut"));
        assertTrue(TrainingApiTest.runCancelledAfter(Training.load(TrainingApiTest.recipe(cut), SHORT), 2).cancelled());
        Path checkpoint = cut.resolve("out/checkpoints/step-000002");
        JsonNode state = new ObjectMapper().readTree(checkpoint.resolve(TrainingCheckpoint.STATE_JSON).toFile());
        assertEquals(uninterrupted.get(1).get("num_tokens").asLong(), state.get("num_tokens").asLong());

        Training.load(TrainingApiTest.recipe(cut), SHORT).resume().run();
        List<JsonNode> resumed = steps(cut.resolve("out/metrics.jsonl"));
        assertEquals(uninterrupted.stream().map(r -> r.get("num_tokens").asLong()).toList(),
                resumed.stream().map(r -> r.get("num_tokens").asLong()).toList());
    }

    /**
     * TRL's evaluation records carry eval_num_tokens: not the validation set's tokens but the training tokens read so
     * far (SFTTrainer.compute_loss sets num_tokens to its running count in eval mode too; SftGoldenTest reads 96 of
     * both from TRL), 0 before the first step. Every method's records do, as TRL's DPO and reward trainers' do. Checked
     * on TrainingApiTest's runs, which evaluate anyway (at steps 0, 3 and 6, one of them resumed at 2).
     */
    static void assertEvaluationsLogTheTrainingTokensSoFar(Path metricsJsonl) {
        List<JsonNode> records = MetricsLog.read(metricsJsonl);
        Map<Long, Long> trained = new TreeMap<>();
        trained.put(0L, 0L);
        records.stream().filter(r -> r.has("loss"))
                .forEach(r -> trained.put(r.get("step").asLong(), r.get("num_tokens").asLong()));
        Map<Long, Long> evaluated = new TreeMap<>();
        records.stream().filter(r -> r.has("eval_loss"))
                .forEach(r -> evaluated.put(r.get("step").asLong(), r.get("eval_num_tokens").asLong()));
        assertFalse(evaluated.isEmpty(), records.toString());
        evaluated.forEach((step, tokens) -> assertEquals(trained.get(step), tokens, "eval_num_tokens at step " + step));
    }

    /**
     * A checkpoint written before mixtune counted tokens has no num_tokens: the count cannot be known, so the resumed
     * run logs none (as the run's earlier records have none) rather than a wrong one.
     */
    @Test
    void aCheckpointWithoutTheCountResumesWithoutNumTokens() throws Exception {
        Path cut = Files.createDirectories(dir.resolve("old"));
        assertTrue(TrainingApiTest.runCancelledAfter(Training.load(TrainingApiTest.recipe(cut), SHORT), 1).cancelled());
        Path stateJson = cut.resolve("out/checkpoints/step-000001").resolve(TrainingCheckpoint.STATE_JSON);
        ObjectMapper json = new ObjectMapper();
        ObjectNode state = (ObjectNode) json.readTree(stateJson.toFile());
        assertTrue(state.has("num_tokens"));
        state.remove("num_tokens");
        json.writeValue(stateJson.toFile(), state);

        Training.load(TrainingApiTest.recipe(cut), SHORT).resume().run();
        List<JsonNode> records = steps(cut.resolve("out/metrics.jsonl"));
        assertEquals(4, records.size());
        assertTrue(records.get(0).has("num_tokens"));
        assertTrue(records.subList(1, 4).stream().noneMatch(r -> r.has("num_tokens")), records.toString());
    }
}
