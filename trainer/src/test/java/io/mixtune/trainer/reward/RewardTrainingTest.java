package io.mixtune.trainer.reward;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDManager;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.Training;
import io.mixtune.trainer.run.MetricsLog;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingResult;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * train.method reward through the one training loop: TRL's metric names in metrics.jsonl, the adapter a PEFT sequence
 * classifier's (head included), and a run cancelled from a listener then resumed ending bit for bit where an
 * uninterrupted run ends (the head, its AdamW moments, the EMA of both, and the shuffled pairs).
 */
class RewardTrainingTest {
    @TempDir
    static Path shared;

    /** 4 steps of 2 x 2 pairs over 24 pairs, dropout on, EMA kept, evaluation every 2 steps. */
    private static Training training(Path dir) throws IOException {
        Path pairs = dir.resolve("pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(pairs, lines.limit(24).toList());
        }
        return Training.load(Path.of("../recipes/quickstart-reward.yaml"), "data.files=[" + pairs + "]",
                "data.validation_ratio=0.25", "data.max_seq_len=384", "lora.dropout=0.1", "train.max_steps=4",
                "train.micro_batch_size=2", "train.gradient_accumulation=2", "train.save_every=2",
                "train.eval_every=2", "averaging.ema_decay=0.5", "output_dir=" + dir.resolve("out"));
    }

    @Test
    void aCancelledRewardRunResumesToTheUninterruptedRunExactly() throws Exception {
        Path whole = Files.createDirectories(shared.resolve("whole"));
        TrainingResult uninterrupted = training(whole).run();
        assertEquals(4, uninterrupted.steps());

        List<JsonNode> records = MetricsLog.read(whole.resolve("out/metrics.jsonl"));
        JsonNode step = records.stream().filter(r -> r.has("loss")).findFirst().orElseThrow();
        for (String name : List.of("min_reward", "mean_reward", "max_reward", "accuracy", "margin")) {
            assertTrue(step.has(name), name + " in " + step);
        }
        JsonNode eval = records.stream().filter(r -> r.has("eval_loss")).reduce((a, b) -> b).orElseThrow();
        for (String name : List.of("eval_accuracy", "eval_margin", "eval_mean_reward", "eval_loss_ema")) {
            assertTrue(eval.has(name), name + " in " + eval);
        }
        JsonNode config = new ObjectMapper().readTree(uninterrupted.adapterDir().resolve("adapter_config.json")
                .toFile());
        assertEquals("SEQ_CLS", config.get("task_type").asText());
        try (SafetensorsReader adapter = SafetensorsReader.open(uninterrupted.adapterDir().resolve(
                "adapter_model.safetensors"))) {
            assertArrayEquals(new long[] {1, 64}, adapter.info("base_model.model.score.weight").shape());
        }

        Path cut = Files.createDirectories(shared.resolve("cut"));
        Training first = training(cut);
        first.listener(new TrainingListener() {
            @Override
            public void onStep(StepEnded event) {
                if (event.step() == 1) {
                    first.cancel();
                }
            }
        });
        TrainingResult cancelled = first.run();
        assertTrue(cancelled.cancelled());
        assertEquals(1, cancelled.steps());
        TrainingResult resumed = training(cut).resume().run();
        assertFalse(resumed.cancelled());
        assertEquals(4, resumed.steps());
        assertEquals(lines(whole.resolve("out/metrics.jsonl")), lines(cut.resolve("out/metrics.jsonl")),
                "one log reading as the uninterrupted run");
        for (String adapter : List.of("adapter", "adapter-ema")) {
            assertSameWeights(uninterrupted.adapterDir().resolveSibling(adapter),
                    resumed.adapterDir().resolveSibling(adapter));
        }
    }

    /** reward.margin takes TRL's margin column from the pairs' scores: a pair without them is named before loading. */
    @Test
    void aMarginLossNeedsScoresOnEveryPair() throws Exception {
        Path dir = Files.createDirectories(shared.resolve("margin"));
        Path pairs = dir.resolve("pairs.jsonl");
        List<String> lines;
        try (Stream<String> all = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            lines = new java.util.ArrayList<>(all.limit(6).toList());
        }
        lines.set(3, lines.get(3).replaceAll(", \"score_chosen\": [-0-9.e]+, \"score_rejected\": [-0-9.e]+", ""));
        assertFalse(lines.get(3).contains("score_chosen"), "the fixture must drop the scores of line 4");
        Files.write(pairs, lines);
        Exception e = org.junit.jupiter.api.Assertions.assertThrows(Exception.class, () -> Training.load(
                Path.of("../recipes/quickstart-reward.yaml"), "data.files=[" + pairs + "]",
                "data.validation_ratio=0", "reward.margin=true", "output_dir=" + dir.resolve("out")).run());
        assertTrue(e.getMessage().contains("reward.margin") && e.getMessage().contains(pairs + ":4"), e.getMessage());
        assertFalse(Files.exists(dir.resolve("out/adapter")));
    }

    /** model.adapter may be a reward model: its LoRA and head go on training (WARM members from one probed head). */
    @Test
    void aRewardModelGoesOnTrainingFromItsAdapterAndHead() throws Exception {
        Path first = Files.createDirectories(shared.resolve("first"));
        Path pairs = first.resolve("pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(pairs, lines.limit(8).toList());
        }
        Path probed = Training.load(Path.of("../recipes/quickstart-reward.yaml"), "data.files=[" + pairs + "]",
                "data.validation_ratio=0", "train.max_steps=1", "train.warmup_steps=0",
                "output_dir=" + first.resolve("out")).run().adapterDir();
        // lr 1e-12: after one step the head is the probed one, not a fresh draw (which the seed would repeat).
        Path continued = Training.load(Path.of("../recipes/quickstart-reward.yaml"), "data.files=[" + pairs + "]",
                "data.validation_ratio=0", "train.max_steps=1", "train.lr=1e-12", "train.warmup_steps=0",
                "model.adapter=" + probed, "output_dir=" + shared.resolve("continued/out")).run().adapterDir();
        try (SafetensorsReader a = SafetensorsReader.open(probed.resolve("adapter_model.safetensors"));
                SafetensorsReader b = SafetensorsReader.open(continued.resolve("adapter_model.safetensors"))) {
            float[] before = a.readFloats("base_model.model.score.weight");
            float[] after = b.readFloats("base_model.model.score.weight");
            assertArrayEquals(before, after, 1e-7f);
            float[] fresh;
            try (NDManager manager = NDManager.newBaseManager()) {
                fresh = RewardHead.initial(ModelPreset.load("tiny-mistral"), 42, manager).toFloatArray();
            }
            double moved = 0;
            for (int i = 0; i < fresh.length; i++) {
                moved = Math.max(moved, Math.abs(fresh[i] - before[i]));
            }
            assertTrue(moved > 1e-4, "the probed head moved from its init in its step: " + moved);
        }
    }

    /** QLoRA: the reward model on an NF4 base, with gradient checkpointing, trains and writes its head. */
    @Test
    void aRewardModelTrainsOnAnNf4BaseWithGradientCheckpointing() throws Exception {
        Path dir = Files.createDirectories(shared.resolve("nf4"));
        Path pairs = dir.resolve("pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(pairs, lines.limit(8).toList());
        }
        TrainingResult result = Training.load(Path.of("../recipes/quickstart-reward.yaml"), "data.files=[" + pairs
                + "]", "data.validation_ratio=0", "model.quantize=nf4", "train.gradient_checkpointing=true",
                "train.max_steps=3", "train.warmup_steps=0", "output_dir=" + dir.resolve("out")).run();
        TrainingResult.StageResult stage = result.lastStage();
        assertTrue(Double.isFinite(stage.firstLoss()) && stage.lastLoss() < stage.firstLoss(),
                stage.firstLoss() + " -> " + stage.lastLoss());
        try (SafetensorsReader adapter = SafetensorsReader.open(result.adapterDir().resolve(
                "adapter_model.safetensors"))) {
            assertTrue(adapter.contains("base_model.model.score.weight"));
        }
    }

    private static List<String> lines(Path metrics) {
        return MetricsLog.read(metrics).stream()
                .map(r -> r.get("step").asText() + " " + r.path("loss").asText() + " " + r.path("accuracy").asText()
                        + " " + r.path("margin").asText() + " " + r.path("eval_loss").asText() + " "
                        + r.path("eval_loss_ema").asText())
                .toList();
    }

    private static void assertSameWeights(Path expected, Path actual) {
        try (SafetensorsReader a = SafetensorsReader.open(expected.resolve("adapter_model.safetensors"));
                SafetensorsReader b = SafetensorsReader.open(actual.resolve("adapter_model.safetensors"))) {
            assertEquals(a.names(), b.names());
            assertTrue(a.names().contains("base_model.model.score.weight"));
            for (String name : a.names()) {
                assertArrayEquals(a.readFloats(name), b.readFloats(name), expected + " " + name);
            }
        }
    }
}
