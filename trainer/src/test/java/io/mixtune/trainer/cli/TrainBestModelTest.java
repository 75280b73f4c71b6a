package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.trainer.run.MetricsLog;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `mixtune train` keeping the best checkpoint and stopping early (train.load_best_model_at_end,
 * metric_for_best_model, greater_is_better, early_stopping_patience) on the tiny Mistral: eval_loss taken as greater
 * is better, so that the falling loss makes step 2's evaluation the best and two more evaluations without
 * improvement stop the run at step 6 of 10; keep_last 1 leaves step 2's checkpoint alone, and the final adapter is
 * its adapter's bytes. A run killed after step 4's checkpoint and resumed stops at the same step with the same
 * figures and adapter; a changed patience is refused on resume; validate refuses cadences that cannot keep the best.
 */
class TrainBestModelTest {
    private static final String[] SETS = {"train.max_steps=10", "train.schedule=constant", "train.eval_every=2", "train.save_every=2",
        "train.keep_last=1", "train.load_best_model_at_end=true", "train.metric_for_best_model=loss",
        "train.greater_is_better=true", "train.early_stopping_patience=2"};

    /** EvalSamplesTest's run (the tiny Mistral, 2 rows a step, dropout on) at a constant rate, on SETS. */
    static Path recipe(Path dir) throws IOException {
        return EvalSamplesTest.recipe(dir, false);
    }

    private static List<String> train(Path dir, String... more) throws IOException {
        List<String> args = new ArrayList<>(List.of("train", "--recipe", recipe(dir).toString()));
        for (String set : SETS) {
            args.addAll(List.of("--set", set));
        }
        for (String set : more) {
            args.addAll(List.of("--set", set));
        }
        return args;
    }

    private static List<String> figures(Path metrics) {
        List<String> lines = new ArrayList<>();
        for (JsonNode record : MetricsLog.read(metrics)) {
            for (String name : List.of("loss", "eval_loss", "best_metric", "best_global_step",
                    "early_stopping_patience_counter", "adapter_from_step")) {
                if (record.has(name)) {
                    lines.add(record.get("step").asInt() + " " + name);
                }
            }
        }
        return lines;
    }

    /**
     * The best step a run's metrics.jsonl names, recomputed from its evaluations after step 0: the first strictly best
     * value of {@code metric} ({@code greater} is better or not), as transformers' _determine_best_metric keeps it;
     * every evaluation record and the run's last record carry it (best_metric, best_global_step).
     */
    static void recordsTheBestEvaluation(Path metrics, String metric, boolean greater) {
        double best = greater ? Double.NEGATIVE_INFINITY : Double.POSITIVE_INFINITY;
        int bestStep = 0;
        int evaluations = 0;
        JsonNode last = null;
        for (JsonNode record : MetricsLog.read(metrics)) {
            last = record;
            if (!record.has(metric) || record.get("step").asInt() == 0) {
                continue;
            }
            double value = record.get(metric).asDouble();
            if (greater ? value > best : value < best) {
                best = value;
                bestStep = record.get("step").asInt();
            }
            evaluations++;
            assertEquals(bestStep, record.get("best_global_step").asInt(), record.toString());
            assertEquals(best, record.get("best_metric").asDouble(), 0, record.toString());
        }
        assertTrue(evaluations >= 2, "evaluations to compare: " + evaluations);
        assertEquals(bestStep, last.get("best_global_step").asInt(), "the run's last record: " + last);
        assertEquals(best, last.get("best_metric").asDouble(), 0, last.toString());
    }

    @Test
    void stopsEarlyKeepsTheBestCheckpointAndResumesToTheSameStop(@TempDir Path shared) throws Exception {
        Path whole = Files.createDirectories(shared.resolve("whole"));
        List<String> args = train(whole);
        assertEquals(0, TrainCommandTest.mixtune(whole, args.toArray(String[]::new)).waitFor(),
                Files.readString(whole.resolve("log.txt")));
        String log = Files.readString(whole.resolve("log.txt"));
        assertTrue(log.contains("step 6: early stopping: eval_loss did not improve on"), log);
        assertTrue(log.contains("load_best_model_at_end"), log);
        Path out = whole.resolve("out");
        List<JsonNode> records = MetricsLog.read(out.resolve("metrics.jsonl"));
        List<Double> evalLosses = new ArrayList<>();
        for (JsonNode record : records) {
            assertTrue(record.get("step").asInt() <= 6, "no step after the stop: " + record);
            if (record.has("eval_loss") && record.get("step").asInt() > 0) {
                evalLosses.add(record.get("eval_loss").asDouble());
                assertEquals(2, record.get("best_global_step").asInt(), record.toString());
            }
        }
        assertEquals(3, evalLosses.size(), evalLosses.toString());
        assertTrue(evalLosses.get(0) > evalLosses.get(1) && evalLosses.get(0) > evalLosses.get(2), "falling "
                + evalLosses + ": step 2 is the best of greater_is_better");
        JsonNode kept = records.get(records.size() - 1);
        assertEquals(6, kept.get("step").asInt());
        assertTrue(kept.get("should_training_stop").asBoolean());
        assertEquals(2, kept.get("adapter_from_step").asInt());
        assertEquals("checkpoints/step-000002", kept.get("best_model_checkpoint").asText());
        assertEquals(evalLosses.get(0), kept.get("best_metric").asDouble(), 0);
        // keep_last 1: rotation kept step 2 beside the newest, and the end leaves the best alone (transformers)
        try (Stream<Path> left = Files.list(out.resolve("checkpoints"))) {
            assertEquals(List.of("step-000002"), left.map(p -> p.getFileName().toString()).sorted().toList());
        }
        Path weights = Path.of("adapter", "adapter_model.safetensors");
        assertArrayEquals(Files.readAllBytes(out.resolve("checkpoints/step-000002").resolve(weights)),
                Files.readAllBytes(out.resolve(weights)), "the final adapter is the best checkpoint's");

        Path killed = Files.createDirectories(shared.resolve("killed"));
        KilledRun.resumesToTheUninterruptedRun("best-model", killed, train(killed), "step-000004",
                "train.early_stopping_patience=3", "train.early_stopping_patience: 2 -> 3", figures(out
                        .resolve("metrics.jsonl")), out, TrainBestModelTest::figures);
        assertFalse(Files.exists(killed.resolve("out/checkpoints/step-000004")));
    }

    /**
     * Stage-DPO: each stage is a run of its own, its evaluations compared among themselves (its eval_loss is against
     * its own reference), as one Trainer per stage would. Stage 1 (4 steps) ends with step 1 best, its adapter step
     * 1's (the first step's rate is 0 in the warmup, and the falling eval_loss is taken as greater is better); stage
     * 2 starts against that adapter as its reference and early stopping ends it at step 9 of 10 (four evaluations
     * without improvement), step 5 best, which is the final adapter. Resumed from stage 1's last checkpoint (its last step's weights), the run
     * loads stage 1's best again before stage 2, and ends with the same adapters.
     */
    @Test
    void dpoStagesEachKeepTheirBestAndStopOnTheirOwn(@TempDir Path dir) throws Exception {
        List<String> args = TrainDpoTest.train(dir, TrainDpoTest.pairs(dir, 12), "dpo.stages=2",
                "data.validation_ratio=0.25", "train.micro_batch_size=2", "train.epochs=2", "data.max_seq_len=96",
                "train.eval_every=1", "train.save_every=1", "train.keep_last=10", "train.load_best_model_at_end=true",
                "train.greater_is_better=true", "train.early_stopping_patience=4");
        assertEquals(0, TrainCommandTest.mixtune(dir, args.toArray(String[]::new)).waitFor(),
                Files.readString(dir.resolve("log.txt")));
        Path out = dir.resolve("out");
        List<JsonNode> records = MetricsLog.read(out.resolve("metrics.jsonl"));
        List<String> steps = new ArrayList<>();
        List<String> kept = new ArrayList<>();
        for (JsonNode record : records) {
            if (record.has("loss")) {
                steps.add(record.get("stage").asInt() + ":" + record.get("step").asInt());
            }
            if (record.has("adapter_from_step")) {
                kept.add(record.get("stage").asInt() + ":" + record.get("step").asInt() + "<-"
                        + record.get("adapter_from_step").asInt() + (record.get("should_training_stop").asBoolean()
                        ? " stopped" : ""));
            }
        }
        assertEquals(List.of("1:1", "1:2", "1:3", "1:4", "2:5", "2:6", "2:7", "2:8", "2:9"), steps,
                Files.readString(dir.resolve("log.txt")));
        assertEquals(List.of("1:4<-1", "2:9<-5 stopped"), kept);
        JsonNode state = new com.fasterxml.jackson.databind.ObjectMapper().readTree(
                out.resolve("checkpoints/step-000002/trainer_state.json").toFile());
        assertEquals(1, state.get("best_global_step").asInt());
        assertEquals("checkpoints/step-000001", state.get("best_model_checkpoint").asText());
        assertEquals(1, state.get("early_stopping_patience_counter").asInt());
        Path weights = Path.of("adapter_model.safetensors");
        byte[] stage1 = Files.readAllBytes(out.resolve("stage-1/adapter").resolve(weights));
        byte[] last = Files.readAllBytes(out.resolve("adapter").resolve(weights));
        assertArrayEquals(Files.readAllBytes(out.resolve("checkpoints/step-000001/adapter").resolve(weights)), stage1);
        assertArrayEquals(Files.readAllBytes(out.resolve("checkpoints/step-000005/adapter").resolve(weights)), last);

        List<String> resume = new ArrayList<>(args);
        resume.addAll(List.of("--resume", out.resolve("checkpoints/step-000004").toString()));
        MixtuneCliTest.Result between = MixtuneCliTest.run(resume.toArray(String[]::new));
        assertEquals(0, between.code(), between.err());
        assertArrayEquals(stage1, Files.readAllBytes(out.resolve("stage-1/adapter").resolve(weights)));
        assertArrayEquals(last, Files.readAllBytes(out.resolve("adapter").resolve(weights)), "stage 2 from stage 1's "
                + "best again");
    }

    /**
     * A fractional swa_start is a step only once the run's length is known: validate passes, and train refuses before
     * the first step (not at step 2's evaluation, where transformers' KeyError would stop the run) and writes no step.
     */
    @Test
    void trainRefusesAnSwaLossBeforeTheFirstStepWhenTheAverageStartsAfterTheFirstEvaluation(@TempDir Path dir)
            throws IOException {
        Path recipe = recipe(dir);
        String[] sets = {"--set", "train.max_steps=10", "--set", "train.eval_every=2", "--set",
            "train.metric_for_best_model=loss_swa", "--set", "averaging.swa_start=0.5"};
        List<String> validate = new ArrayList<>(List.of("validate", "--recipe", recipe.toString()));
        validate.addAll(List.of(sets).subList(2, sets.length));
        validate.addAll(List.of("--set", "train.max_steps=null"));
        MixtuneCliTest.Result validated = MixtuneCliTest.run(validate.toArray(String[]::new));
        assertEquals(0, validated.code(), validated.out() + validated.err());
        List<String> args = new ArrayList<>(List.of("train", "--recipe", recipe.toString()));
        args.addAll(List.of(sets));
        MixtuneCliTest.Result refused = MixtuneCliTest.run(args.toArray(String[]::new));
        assertEquals(2, refused.code(), refused.out() + refused.err());
        assertTrue(refused.err().contains("train.metric_for_best_model: eval_loss_swa is the loss of the SWA average, "
                + "which holds nothing before step 5 (averaging.swa_start 0.5 of 10 steps), and the first evaluation "
                + "comes after step 2 (train.eval_every 2)"), refused.err());
        assertFalse(refused.out().contains("step 1/"), refused.out());
    }

    @Test
    void validateRefusesWhatCannotKeepTheBestNamingTheKeys(@TempDir Path dir) throws IOException {
        Path recipe = recipe(dir);
        String[][] refusals = {
            {"train.save_every=3", "train.eval_every=2", "train.load_best_model_at_end=true", "train.save_every"},
            {"train.save_every=0", "train.eval_every=2", "train.load_best_model_at_end=true", "train.eval_every"},
            {"data.validation_ratio=0", "train.early_stopping_patience=2", "train.keep_last=2",
                "train.early_stopping_patience: compares evaluations, and the run has no validation data"},
            {"train.early_stopping_patience=0", "train.keep_last=2", "train.keep_last=2",
                "early_stopping_patience: must be >= 1"},
            {"train.early_stopping_threshold=0.1", "train.keep_last=2", "train.keep_last=2",
                "early_stopping_threshold: applies to early stopping, which is off"},
            {"train.greater_is_better=true", "train.keep_last=2", "train.keep_last=2",
                "greater_is_better: applies to metric_for_best_model, which is off"},
        };
        for (String[] refusal : refusals) {
            MixtuneCliTest.Result result = MixtuneCliTest.run("validate", "--recipe", recipe.toString(), "--set",
                    refusal[0], "--set", refusal[1], "--set", refusal[2]);
            assertEquals(2, result.code(), result.out() + result.err());
            assertTrue(result.err().contains(refusal[3]), result.err());
        }
        MixtuneCliTest.Result grpo = MixtuneCliTest.run("validate", "--recipe", "../recipes/quickstart-grpo.yaml",
                "--set", "train.early_stopping_patience=2");
        assertEquals(2, grpo.code(), grpo.out() + grpo.err());
        assertTrue(grpo.err().contains("train.early_stopping_patience: compares evaluations, and train.method grpo "
                + "evaluates nothing"), grpo.err());
        MixtuneCliTest.Result listed = MixtuneCliTest.run("validate", "--recipe", recipe.toString());
        for (String key : List.of("load_best_model_at_end: false", "metric_for_best_model: null",
                "greater_is_better: null", "early_stopping_patience: null", "early_stopping_threshold: 0.0")) {
            assertTrue(listed.out().contains(key), listed.out());
        }
    }
}
