package io.mixtune.trainer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.run.MetricsLog;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingResult;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Training from Java ({@link Training}): the events a listener receives and their order, silence unless a listener
 * prints, and a run cancelled from a listener then resumed ending exactly where an uninterrupted run ends.
 */
class TrainingApiTest {
    @TempDir
    static Path shared;

    /** Runs {@code training} with a listener that cancels it after step {@code step}: a run stopped from the API. */
    static TrainingResult runCancelledAfter(Training training, long step) {
        training.listener(new TrainingListener() {
            @Override
            public void onStep(StepEnded event) {
                if (event.step() == step) {
                    training.cancel();
                }
            }
        });
        return training.run();
    }

    /** 6 steps of 2 x 2 rows over 24 chats, dropout on, EMA and LaWA kept: what resume must carry over exactly. */
    static Path recipe(Path dir) throws IOException {
        Path chats = dir.resolve("chats.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/chats.jsonl"))) {
            Files.write(chats, lines.limit(24).toList());
        }
        Path recipe = dir.resolve("recipe.yaml");
        Files.writeString(recipe, """
                model:
                  preset: tiny-mixtral
                lora:
                  r: 4
                  alpha: 8
                  dropout: 0.1
                  targets: [q_proj, v_proj, w1, w2, w3]
                data:
                  files: [%s]
                  validation_ratio: 0.25
                  max_seq_len: 96
                train:
                  max_steps: 6
                  micro_batch_size: 2
                  gradient_accumulation: 2
                  lr: 3.0e-3
                  warmup_steps: 1
                  save_every: 3
                  eval_every: 3
                averaging:
                  ema_decay: 0.9
                  lawa_k: 2
                  lawa_every: 2
                output_dir: %s
                """.formatted(chats, dir.resolve("out")));
        return recipe;
    }

    /** Every event as a line: the kind and its step. */
    static final class Recorder implements TrainingListener {
        final List<String> events = new ArrayList<>();

        @Override
        public void onRunStarted(RunStarted event) {
            events.add("started " + event.firstStep() + "/" + event.totalSteps());
        }

        @Override
        public void onStageStarted(StageStarted event) {
            events.add("stage " + event.stage() + "/" + event.stageCount());
        }

        @Override
        public void onStep(StepEnded event) {
            events.add("step " + event.step());
        }

        @Override
        public void onEvaluation(Evaluated event) {
            events.add("eval " + event.step());
        }

        @Override
        public void onCheckpoint(CheckpointSaved event) {
            events.add("checkpoint " + event.step());
        }

        @Override
        public void onRunFinished(RunFinished event) {
            events.add("finished " + event.result().steps());
        }
    }

    @Test
    void listenersReceiveTypedEventsInOrderAndNothingPrints() throws Exception {
        Path dir = Files.createDirectories(shared.resolve("events"));
        Recorder recorder = new Recorder();
        List<String> notes = new ArrayList<>();
        ByteArrayOutputStream printed = new ByteArrayOutputStream();
        PrintStream stdout = System.out;
        TrainingResult result;
        System.setOut(new PrintStream(printed, true, StandardCharsets.UTF_8));
        try {
            result = Training.load(recipe(dir)).listener(recorder).listener(new TrainingListener() {
                @Override
                public void onNote(String line) {
                    notes.add(line);
                }
            }).run();
        } finally {
            System.setOut(stdout);
        }
        assertEquals(List.of("started 0/6", "stage 1/1", "eval 0", "step 1", "step 2", "step 3", "eval 3",
                "checkpoint 3", "step 4", "step 5", "step 6", "eval 6", "checkpoint 6", "finished 6"),
                recorder.events);
        assertEquals("", printed.toString(StandardCharsets.UTF_8), "the API prints nothing itself");
        assertTrue(notes.stream().anyMatch(n -> n.startsWith("training 6 steps")), notes.toString());

        Path out = dir.resolve("out");
        assertFalse(result.cancelled());
        assertEquals(6, result.steps());
        assertEquals(out.resolve("adapter"), result.adapterDir());
        assertEquals(List.of("ema", "lawa"), List.copyOf(result.averagedAdapters().keySet()));
        assertTrue(Files.isRegularFile(result.averagedAdapters().get("ema").resolve("adapter_model.safetensors")));
        assertEquals(List.of(out.resolve("checkpoints/step-000003"), out.resolve("checkpoints/step-000006")),
                result.checkpoints());
        TrainingResult.StageResult stage = result.lastStage();
        assertEquals(6, stage.lastStep());
        assertEquals(0L, ((Number) stage.firstEvaluation().get("step")).longValue());
        assertEquals(6L, ((Number) stage.lastEvaluation().get("step")).longValue());
        // The run's own files are written whether or not anyone listens.
        assertTrue(Files.size(out.resolve("loss.png")) > 1000);
        List<JsonNode> records = MetricsLog.read(out.resolve("metrics.jsonl"));
        assertEquals(6 + 3, records.size(), "6 steps and 3 evaluations");
        JsonNode last = records.get(records.size() - 2);
        assertEquals(stage.lastLoss(), last.get("loss").asDouble(), 0);
        assertEquals(last.get("lr").asDouble(), last.get("learning_rate").asDouble(), 0, "transformers' name too");
    }

    @Test
    void aRunCancelledFromAListenerResumesToTheUninterruptedRunExactly() throws Exception {
        Path whole = Files.createDirectories(shared.resolve("whole"));
        TrainingResult uninterrupted = Training.load(recipe(whole)).run();

        Path cut = Files.createDirectories(shared.resolve("cut"));
        TrainingResult cancelled = runCancelledAfter(Training.load(recipe(cut)), 2);
        assertTrue(cancelled.cancelled());
        assertEquals(2, cancelled.steps());
        assertNull(cancelled.adapterDir(), "no final adapter for a run that did not finish");
        assertEquals(List.of(cut.resolve("out/checkpoints/step-000002")), cancelled.checkpoints(),
                "a checkpoint of the step where it stopped, though save_every is 3");
        assertFalse(Files.exists(cut.resolve("out/adapter")));

        Recorder recorder = new Recorder();
        TrainingResult resumed = Training.load(recipe(cut)).resume().listener(recorder).run();
        assertEquals("started 2/6", recorder.events.get(0));
        assertFalse(resumed.cancelled());
        assertEquals(6, resumed.steps());
        assertEquals(losses(whole.resolve("out/metrics.jsonl")), losses(cut.resolve("out/metrics.jsonl")),
                "one log reading as the uninterrupted run");
        for (String adapter : List.of("adapter", "adapter-ema", "adapter-lawa")) {
            assertSameWeights(uninterrupted.adapterDir().resolveSibling(adapter),
                    resumed.adapterDir().resolveSibling(adapter));
        }
        assertFalse(resumed.alreadyFinished());
        NumTokensTest.assertEvaluationsLogTheTrainingTokensSoFar(whole.resolve("out/metrics.jsonl"));
        NumTokensTest.assertEvaluationsLogTheTrainingTokensSoFar(cut.resolve("out/metrics.jsonl"));

        // Resumed once more, the run had finished: the result says so, with no stage of NaN losses (the CLI's "the
        // run had already finished at step 6" reads it), and its adapters are written again from step 6.
        Recorder again = new Recorder();
        TrainingResult finished = Training.load(recipe(cut)).resume().listener(again).run();
        assertTrue(finished.alreadyFinished());
        assertEquals(6, finished.steps());
        assertFalse(finished.cancelled());
        assertEquals(List.of(), finished.stages());
        assertNull(finished.lastStage());
        assertEquals(List.of("started 6/6", "stage 1/1", "finished 6"), again.events);
        assertEquals(losses(whole.resolve("out/metrics.jsonl")), losses(cut.resolve("out/metrics.jsonl")));
        assertSameWeights(uninterrupted.adapterDir(), finished.adapterDir());
    }

    /**
     * Stage-DPO runs through the same loop: a stage event per stage, and the weight averages SFT keeps (an EMA here),
     * evaluated and written beside each stage's adapter.
     */
    @Test
    void stageDpoKeepsWeightAveragesPerStage() throws Exception {
        Path dir = Files.createDirectories(shared.resolve("dpo"));
        Path pairs = dir.resolve("pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(pairs, lines.limit(24).toList());
        }
        Recorder recorder = new Recorder();
        TrainingResult result = Training.load(Path.of("../recipes/quickstart-dpo.yaml"),
                "data.files=[" + pairs + "]", "data.validation_ratio=0.25", "train.max_steps=2",
                "train.save_every=0", "averaging.ema_decay=0.5", "output_dir=" + dir.resolve("out"))
                .listener(recorder).run();
        assertEquals(List.of("started 0/4", "stage 1/2", "step 1", "step 2", "eval 2", "checkpoint 2", "stage 2/2",
                "step 3", "step 4", "eval 4", "checkpoint 4", "finished 4"), recorder.events);
        Path out = dir.resolve("out");
        for (int stage = 1; stage <= 2; stage++) {
            TrainingResult.StageResult stageResult = result.stages().get(stage - 1);
            assertEquals(out.resolve("stage-" + stage + "/adapter"), stageResult.adapterDir());
            assertEquals(out.resolve("stage-" + stage + "/adapter-ema"), stageResult.averagedAdapters().get("ema"));
            assertTrue(Files.isRegularFile(stageResult.averagedAdapters().get("ema").resolve("adapter_config.json")));
            assertTrue(stageResult.lastEvaluation().containsKey("eval_loss_ema"), stageResult.lastEvaluation()
                    .toString());
            assertEquals(stage, ((Number) stageResult.lastMetrics().get("stage")).intValue());
        }
        assertSameWeights(out.resolve("stage-2/adapter"), result.adapterDir());
    }

    /** KTO through the Java API: Training runs train.method kto and its steps carry TRL's KTO metrics. */
    @Test
    void ktoRunsThroughTheApi() throws Exception {
        Path dir = Files.createDirectories(shared.resolve("kto"));
        Path pairs = dir.resolve("pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(pairs, lines.limit(4).toList());
        }
        Recorder recorder = new Recorder();
        TrainingResult result = Training.load(Path.of("../recipes/quickstart-kto.yaml"), "data.files=[" + pairs + "]",
                "data.validation_ratio=0", "train.max_steps=2", "train.save_every=0",
                "output_dir=" + dir.resolve("out")).listener(recorder).run();
        assertEquals(List.of("started 0/2", "stage 1/1", "step 1", "step 2", "checkpoint 2", "finished 2"),
                recorder.events);
        assertTrue(result.lastStage().lastMetrics().containsKey("kl"), result.lastStage().lastMetrics().toString());
        assertTrue(Files.isRegularFile(result.adapterDir().resolve("adapter_model.safetensors")));
    }

    private static List<String> losses(Path metrics) {
        return MetricsLog.read(metrics).stream()
                .map(r -> r.get("step").asText() + " " + r.path("loss").asText() + " " + r.path("eval_loss").asText()
                        + " " + r.path("eval_loss_ema").asText())
                .toList();
    }

    private static void assertSameWeights(Path expected, Path actual) {
        try (SafetensorsReader a = SafetensorsReader.open(expected.resolve("adapter_model.safetensors"));
                SafetensorsReader b = SafetensorsReader.open(actual.resolve("adapter_model.safetensors"))) {
            assertEquals(a.names(), b.names());
            for (String name : a.names()) {
                assertArrayEquals(a.readFloats(name), b.readFloats(name), expected + " " + name);
            }
        }
    }
}
