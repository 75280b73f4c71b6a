package io.mixtune.trainer.run;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.trainer.Training;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * How steps cut epochs, against transformers' Trainer (measured with transformers 5.18: 44 batches an epoch,
 * gradient_accumulation_steps 7, 2 epochs gave max_steps 14, epoch 0.955 logged at step 6 and 1.159 at step 8), and
 * what a logged record holds when train.log_every passes over steps (transformers logs the loss since the last log).
 */
class EpochStepsTest {
    @TempDir
    static Path dir;

    @Test
    void anEpochsLastStepTakesWhatIsLeftOfItAsTransformersCutsIt() {
        EpochSteps steps = new EpochSteps(44, 7);
        assertEquals(7, steps.stepsPerEpoch());
        assertEquals(42, steps.firstMicroBatch(6));
        assertEquals(44, steps.endMicroBatch(6), "step 7 takes the epoch's last 2 micro-batches alone");
        assertEquals(44, steps.firstMicroBatch(7), "step 8 starts the second epoch");
        assertEquals(51, steps.endMicroBatch(7));
        assertEquals(88, steps.endMicroBatch(13));
        assertEquals(0.955, (double) steps.endMicroBatch(5) / 44, 5e-4, "transformers' epoch at step 6");
        assertEquals(1.159, (double) steps.endMicroBatch(7) / 44, 5e-4, "transformers' epoch at step 8");

        EpochSteps whole = new EpochSteps(12, 3); // an epoch of whole steps: step s takes 3s to 3s + 2, as ever
        for (long s = 0; s < 10; s++) {
            assertEquals(3 * s, whole.firstMicroBatch(s));
            assertEquals(3 * s + 3, whole.endMicroBatch(s));
        }
    }

    /** 16 chats, 4 held out: the 12 left in rows of 64 tokens give an epoch of micro-batches that 3 does not divide. */
    private static Path recipe(Path runDir, int logEvery) throws IOException {
        Path chats = dir.resolve("chats.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/chats.jsonl"))) {
            Files.write(chats, lines.limit(16).toList());
        }
        Path recipe = runDir.resolve("recipe.yaml");
        Files.createDirectories(runDir);
        Files.writeString(recipe, """
                model:
                  preset: tiny-mistral
                lora:
                  r: 4
                  alpha: 8
                  dropout: 0.0
                  targets: [q_proj, v_proj]
                data:
                  files: [%s]
                  validation_ratio: 0.25
                  max_seq_len: 64
                  packing: false
                train:
                  epochs: 2
                  micro_batch_size: 2
                  gradient_accumulation: 4
                  lr: 1.0e-3
                  log_every: %d
                  eval_every: 0
                output_dir: %s
                """.formatted(chats, logEvery, runDir.resolve("out")));
        return recipe;
    }

    private static List<JsonNode> stepRecords(TrainingResult result) {
        return MetricsLog.read(result.adapterDir().resolveSibling("metrics.jsonl")).stream()
                .filter(r -> r.has("loss")).toList();
    }

    @Test
    void aRunOfEpochsEndsEachEpochWithAShortStepAndLogsMeansOverLogEvery() throws Exception {
        // 12 chats, unpacked, 2 a micro-batch: 6 micro-batches an epoch, steps of 4: 4 + 2 in each epoch
        TrainingResult everyStep = Training.load(recipe(dir.resolve("every"), 1)).run();
        List<JsonNode> records = stepRecords(everyStep);
        assertEquals(4, records.size(), "2 epochs of ceil(6 / 4) steps; before, ceil(12 / 4) = 3 steps");
        List<Double> epochs = new ArrayList<>();
        records.forEach(r -> epochs.add(r.get("epoch").asDouble()));
        assertEquals(List.of(4 / 6.0, 1.0, 10 / 6.0, 2.0), epochs, "no step holds two epochs' micro-batches");

        TrainingResult everySecond = Training.load(recipe(dir.resolve("second"), 2)).run();
        List<JsonNode> logged = stepRecords(everySecond);
        assertEquals(List.of(2, 4), logged.stream().map(r -> r.get("step").asInt()).toList());
        for (int k = 0; k < 2; k++) {
            JsonNode a = records.get(2 * k);
            JsonNode b = records.get(2 * k + 1);
            JsonNode mean = logged.get(k);
            assertEquals((a.get("loss").asDouble() + b.get("loss").asDouble()) / 2, mean.get("loss").asDouble(), 1e-12,
                    "the loss since the last log, as transformers logs it");
            // steps of 4 and 2 micro-batches: TRL averages the 6 micro-batches' values appended since the last log
            assertEquals((4 * a.get("mean_token_accuracy").asDouble() + 2 * b.get("mean_token_accuracy").asDouble()) / 6,
                    mean.get("mean_token_accuracy").asDouble(), 1e-12, "TRL's metrics since the last log");
            assertEquals((4 * a.get("entropy").asDouble() + 2 * b.get("entropy").asDouble()) / 6,
                    mean.get("entropy").asDouble(), 1e-12, "TRL's metrics since the last log");
            assertFalse(mean.has("aux_loss"), "a dense model: TRL logs no aux_loss");
            assertEquals(b.get("lr").asDouble(), mean.get("lr").asDouble(), 0, "the logged step's own");
            assertEquals(b.get("grad_norm").asDouble(), mean.get("grad_norm").asDouble(), 0, "the logged step's own");
            assertEquals(b.get("target_tokens").asInt(), mean.get("target_tokens").asInt(), "a count: the step's own");
            assertNotEquals(a.get("loss").asDouble(), b.get("loss").asDouble());
        }
    }
}
