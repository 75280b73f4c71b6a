package io.mixtune.trainer.run;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.trainer.Refusal;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * mixtune's best checkpoint and early stopping against transformers 5.18's own code on made-up evaluation sequences
 * (golden/best_model/cases.json, interop/make_best_model_goldens.py): EarlyStoppingCallback's patience counter and
 * stop step, Trainer._determine_best_metric's best_metric and best_global_step, best_model_checkpoint (which stays
 * on the last saved best when a better step was not saved), rotate_checkpoints keeping the best beyond
 * save_total_limit and the save_total_limit 1 case at the end; each case's keys bound from a recipe, so that
 * greater_is_better's default by the metric's name and the eval_ prefix are the recipe's.
 */
class BestModelGoldenTest {
    private static final Path GOLDEN = Path.of("src/test/resources/golden/best_model/cases.json");

    /** The DPO quickstart's train section: its evaluation logs the cases' metrics (eval_loss, rewards/accuracies). */
    static Recipe.Train train(String... sets) {
        List<String> overrides = new ArrayList<>(List.of(sets));
        return RecipeReader.read(Path.of("../recipes/quickstart-dpo.yaml"), overrides).recipe().train();
    }

    @Test
    void comparesStopsAndRotatesAsTransformers(@TempDir Path dir) throws IOException {
        JsonNode cases = new ObjectMapper().readTree(GOLDEN.toFile()).get("cases");
        assertEquals(9, cases.size());
        for (JsonNode c : cases) {
            String name = c.get("name").asText();
            List<String> sets = new ArrayList<>(List.of("train.eval_every=" + c.get("eval_steps").asInt(),
                    "train.save_every=" + c.get("save_steps").asInt(), "train.keep_last=" + c.get("save_total_limit").asInt(),
                    "train.load_best_model_at_end=" + c.get("load_best_model_at_end").asBoolean()));
            if (!c.get("metric_for_best_model").isNull()) {
                sets.add("train.metric_for_best_model=" + c.get("metric_for_best_model").asText());
            }
            if (!c.get("greater_is_better").isNull()) {
                sets.add("train.greater_is_better=" + c.get("greater_is_better").asBoolean());
            }
            if (!c.get("early_stopping_patience").isNull()) {
                sets.add("train.early_stopping_patience=" + c.get("early_stopping_patience").asInt());
                sets.add("train.early_stopping_threshold=" + c.get("early_stopping_threshold").asDouble());
            }
            Recipe.Train train = train(sets.toArray(String[]::new));
            assertEquals(c.get("resolved_greater_is_better").asBoolean(), train.bestModelGreaterIsBetter(), name);
            BestModel best = BestModel.of(train);
            Path checkpoints = Files.createDirectories(dir.resolve(name));
            int every = c.get("eval_steps").asInt();
            int save = c.get("save_steps").asInt();
            int total = c.get("total_steps").asInt();
            Iterator<JsonNode> values = c.get("values").iterator();
            Iterator<JsonNode> evaluations = c.get("evaluations").iterator();
            Long stop = null;
            for (long step = 1; step <= total; step++) {
                if (step % every == 0 || step == total) {
                    Map<String, Object> metrics = new LinkedHashMap<>();
                    metrics.put("step", step);
                    metrics.put(train.bestModelMetric(), values.next().asDouble());
                    best.evaluated(step, metrics);
                    JsonNode expected = evaluations.next();
                    String at = name + " step " + step;
                    assertEquals(expected.get("step").asLong(), step, at);
                    assertEquals(expected.get("counter").asInt(), best.state().patienceCounter(), at);
                    assertEquals(expected.get("best_metric").asDouble(), best.state().bestMetric(), 0, at);
                    assertEquals(expected.get("best_global_step").asLong(), best.state().bestGlobalStep(), at);
                }
                if (step % save == 0 || step == total) { // TrainingLoop's cadence, and its save's rotation
                    best.saving(step, true);
                    Path checkpoint = Files.createDirectories(TrainingCheckpoint.directoryOf(checkpoints, step));
                    Files.writeString(checkpoint.resolve(TrainingCheckpoint.STATE_JSON), "{\"sha256\": {}}");
                    TrainingCheckpoint.prune(checkpoints, train.keepLast(), best.bestCheckpoint(checkpoints));
                }
                if (best.shouldTrainingStop()) {
                    stop = step;
                    break;
                }
            }
            BestModel.keepOnlyBest(checkpoints, train.keepLast(), best.bestCheckpoint(checkpoints));
            assertEquals(c.get("stop_step").isNull() ? null : c.get("stop_step").asLong(), stop, name);
            assertEquals(c.get("best_model_checkpoint_step").asLong(), best.state().bestCheckpointStep(), name);
            List<Long> left = TrainingCheckpoint.list(checkpoints).stream().map(TrainingCheckpoint::stepOf).toList();
            List<Long> expectedLeft = new ArrayList<>();
            c.get("checkpoints_left").forEach(step -> expectedLeft.add(step.asLong()));
            assertEquals(expectedLeft, left, name);
        }
    }

    @Test
    void aMetricTheEvaluationLacksIsRefusedNamingThoseItHas() {
        BestModel best = BestModel.of(train("train.metric_for_best_model=rewards/accuracies"));
        Map<String, Object> metrics = new LinkedHashMap<>(Map.of("step", 2L, "eval_loss", 1.0));
        Refusal refusal = assertThrows(Refusal.class, () -> best.evaluated(2, metrics));
        assertTrue(refusal.getMessage().contains("eval_rewards/accuracies is not among the evaluation metrics of this "
                + "run [eval_loss]"), refusal.getMessage());
    }

    @Test
    void offWithoutTheKeysAndTheirStateSurvivesTrainerStateJson() {
        assertNull(BestModel.of(train()));
        BestModel.State state = new BestModel.State(Double.POSITIVE_INFINITY, 0, 0, 1, false);
        com.fasterxml.jackson.databind.node.ObjectNode json = new ObjectMapper().createObjectNode();
        state.writeInto(json, Path.of("checkpoints"));
        assertEquals(state, BestModel.State.readFrom(json));
        BestModel.State saved = new BestModel.State(0.25, 4, 4, 2, true);
        json = new ObjectMapper().createObjectNode();
        saved.writeInto(json, Path.of("checkpoints"));
        assertEquals("checkpoints/step-000004", json.get("best_model_checkpoint").asText());
        assertEquals(saved, BestModel.State.readFrom(json));
        assertNull(BestModel.State.readFrom(new ObjectMapper().createObjectNode()));
    }
}
