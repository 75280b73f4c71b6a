package io.mixtune.trainer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.trainer.run.MetricsLog;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * NEFTune through a whole run (EmbeddingNoiseTest holds the draws against transformers' hook): the noise reaches the
 * training forwards, so the losses leave the noiseless run's after the first step, and a run cancelled at step 2 and
 * resumed draws the same noise as one that ran through, ending on its losses.
 */
class NeftuneRunTest {
    /** TrainingApiTest's run cut to 4 steps without validation, as NumTokensTest cuts it. */
    private static final String[] SHORT = {"train.max_steps=4", "data.validation_ratio=0"};

    private static final String[] NOISY = {"train.max_steps=4", "data.validation_ratio=0",
        "train.neftune_noise_alpha=5"};

    @TempDir
    Path dir;

    private static List<Double> losses(Path run) {
        return MetricsLog.read(run.resolve("out/metrics.jsonl")).stream().filter(r -> r.has("loss"))
                .map(r -> r.get("loss").asDouble()).toList();
    }

    @Test
    void noiseChangesTheRunAndResumesExactly() throws Exception {
        Path plain = Files.createDirectories(dir.resolve("plain"));
        Training.load(TrainingApiTest.recipe(plain), SHORT).run();
        Path whole = Files.createDirectories(dir.resolve("whole"));
        Training.load(TrainingApiTest.recipe(whole), NOISY).run();
        List<Double> noiseless = losses(plain);
        List<Double> noisy = losses(whole);
        assertEquals(4, noisy.size());
        assertNotEquals(noiseless, noisy, "the noise reaches the training forwards");
        for (int i = 0; i < 4; i++) {
            // alpha 5 over sqrt(L x hidden) is a small perturbation of embeddings of norm ~1: losses stay close.
            assertEquals(noiseless.get(i), noisy.get(i), 0.05 * noiseless.get(i), "step " + (i + 1));
        }

        Path cut = Files.createDirectories(dir.resolve("cut"));
        assertTrue(TrainingApiTest.runCancelledAfter(Training.load(TrainingApiTest.recipe(cut), NOISY), 2).cancelled());
        Training.load(TrainingApiTest.recipe(cut), NOISY).resume().run();
        assertEquals(noisy, losses(cut), "the resumed run draws the uninterrupted run's noise");
        JsonNode last = MetricsLog.read(cut.resolve("out/metrics.jsonl")).stream().filter(r -> r.has("loss"))
                .reduce((a, b) -> b).orElseThrow();
        assertEquals(4, last.get("step").asInt());
    }
}
