package io.mixtune.trainer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.trainer.run.TrainingResult;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * ORPO and SimPO through the Java API (the TrainingApiTest pattern): Training runs train.method orpo and cpo, their steps
 * carry TRL's metric names (ORPO's log-odds ones only for ORPO; SimPO's nll_loss 0 with cpo_alpha 0, as TRL logs it),
 * and no reference is kept in the checkpoint.
 */
class OrpoApiTest {
    @TempDir
    static Path shared;

    /** The first 4 sample preference pairs, in DIR/pairs.jsonl. */
    private static Path pairs(Path dir) throws IOException {
        Path pairs = dir.resolve("pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(pairs, lines.limit(4).toList());
        }
        return pairs;
    }

    private static TrainingResult run(String name, String... sets) throws Exception {
        Path dir = Files.createDirectories(shared.resolve(name));
        Path pairs = pairs(dir);
        TrainingApiTest.Recorder recorder = new TrainingApiTest.Recorder();
        String[] all = Stream.concat(Stream.of("data.files=[" + pairs + "]", "data.validation_ratio=0",
                "train.max_steps=2", "train.save_every=0", "output_dir=" + dir.resolve("out")), Stream.of(sets))
                .toArray(String[]::new);
        TrainingResult result = Training.load(Path.of("../recipes/quickstart-orpo.yaml"), all).listener(recorder)
                .run();
        assertEquals(List.of("started 0/2", "stage 1/1", "step 1", "step 2", "checkpoint 2", "finished 2"),
                recorder.events);
        assertTrue(Files.isRegularFile(result.adapterDir().resolve("adapter_model.safetensors")));
        try (Stream<Path> files = Files.list(dir.resolve("out/checkpoints/step-000002"))) {
            assertFalse(files.anyMatch(f -> f.getFileName().toString().startsWith("reference")), "no reference state");
        }
        return result;
    }

    @Test
    void orpoRunsThroughTheApi() throws Exception {
        Map<String, Object> metrics = run("orpo").lastStage().lastMetrics();
        for (String name : List.of("rewards/chosen", "rewards/accuracies", "logps/chosen", "nll_loss",
                "log_odds_ratio", "log_odds_chosen")) {
            assertTrue(metrics.containsKey(name), name + " in " + metrics);
        }
    }

    @Test
    void simpoRunsThroughTheApi() throws Exception {
        Map<String, Object> metrics = run("simpo", "train.method=cpo", "cpo.loss=simpo", "cpo.cpo_alpha=0",
                "cpo.beta=2.0").lastStage().lastMetrics();
        assertTrue(metrics.containsKey("rewards/margins"), metrics.toString());
        assertEquals(0.0, ((Number) metrics.get("nll_loss")).doubleValue(), metrics.toString());
        assertFalse(metrics.containsKey("log_odds_ratio"), metrics.toString());
    }

    /**
     * SimPO (train.method cpo) evaluates under TRL's eval_ names, in this JVM, so the training loop's assertion holds
     * them to EvaluationMetrics' cpo list (no other test evaluates a cpo run).
     */
    @Test
    void simpoEvaluatesUnderTrlsNames() throws Exception {
        Path dir = Files.createDirectories(shared.resolve("simpo-eval"));
        Path pairs = pairs(dir);
        TrainingResult result = Training.load(Path.of("../recipes/quickstart-orpo.yaml"), "data.files=[" + pairs + "]",
                "data.validation_ratio=0.5", "train.max_steps=1", "train.save_every=0", "train.method=cpo",
                "cpo.loss=simpo", "cpo.cpo_alpha=0", "output_dir=" + dir.resolve("out")).run();
        Map<String, Object> evaluation = result.lastStage().lastEvaluation();
        assertTrue(evaluation.containsKey("eval_rewards/accuracies") && evaluation.containsKey("eval_nll_loss"),
                evaluation.toString());
        assertFalse(evaluation.containsKey("eval_log_odds_ratio"), evaluation.toString());
    }
}
