package io.mixtune.trainer.run;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import io.mixtune.data.batch.PackedRow;
import io.mixtune.data.batch.PackingStrategy;
import io.mixtune.model.mistral.CausalLm;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * NEFTune's noise as transformers' neftune_post_forward_hook draws it: uniform in [-m, m), m = alpha / sqrt(L x
 * hidden), L the padded length (padding counts) or a packed micro-batch's real tokens; seeded per micro-batch.
 */
class EmbeddingNoiseTest {
    private static final int HIDDEN = 64;

    /** A padded batch of 2 rows of length 8, the second padded after 3 tokens. */
    private static TrainingBatch padded() {
        long[][] ids = new long[2][8];
        long[][] mask = new long[2][8];
        long[][] positions = new long[2][8];
        for (int t = 0; t < 8; t++) {
            mask[0][t] = 1;
            mask[1][t] = t < 3 ? 1 : 0;
            positions[0][t] = t;
            positions[1][t] = t;
        }
        return new TrainingBatch(ids, ids, positions, null, mask);
    }

    /** Two packed rows cut at length 6, holding 6 + 4 real tokens (the second row's tail is padding, sample -1). */
    private static TrainingBatch packed() {
        long[][] ids = new long[2][6];
        long[][] samples = {{0, 0, 0, 1, 1, 1}, {0, 0, 0, 0, -1, -1}};
        return new TrainingBatch(ids, ids, new long[2][6], samples, null);
    }

    private static float[] noiseOn(TrainingBatch batch, double alpha, long seed, NDManager manager) {
        NDArray zeros = manager.zeros(new Shape(batch.rows(), batch.length(), HIDDEN), DataType.FLOAT32);
        return new EmbeddingNoise(alpha).apply(zeros, batch, seed).toFloatArray();
    }

    @Test
    void noiseIsUniformWithinAlphaOverSqrtOfLengthTimesHidden() {
        try (NDManager manager = NDManager.newBaseManager()) {
            // padded: L = 8 (the padded length, padding counts as in the hook's output.size(1)); packed: L = 10
            for (TrainingBatch batch : new TrainingBatch[] {padded(), packed()}) {
                long length = batch.sampleIds() == null ? 8 : 10;
                float m = (float) (5.0 / Math.sqrt(length * HIDDEN));
                assertEquals(m, new EmbeddingNoise(5).magnitude(batch, HIDDEN));
                float[] noise = noiseOn(batch, 5, 42, manager);
                double max = 0;
                double sum = 0;
                double squares = 0;
                for (float v : noise) {
                    max = Math.max(max, Math.abs(v));
                    sum += v;
                    squares += (double) v * v;
                }
                double mean = sum / noise.length;
                double variance = squares / noise.length - mean * mean;
                System.out.printf("L %d: m %.6f, max |noise| %.6f, mean %.2e, variance/(m^2/3) %.4f over %d%n", length,
                        m, max, mean, variance / (m * m / 3.0), noise.length);
                assertTrue(max <= m, "max |noise| " + max + " above m " + m);
                assertTrue(max > 0.98 * m, "max |noise| " + max + " far below m " + m);
                // n >= 640 draws: the mean's standard error is m / sqrt(3n) < 0.023 m
                assertTrue(Math.abs(mean) < 0.1 * m, "mean " + mean);
                assertEquals(1.0, variance / (m * m / 3.0), 0.15);
                assertTrue(noise[noise.length - 1] != 0, "padding positions are noised too, as the hook does");
            }
        }
    }

    /**
     * A wrapped row is one sequence that TRL collates without padding-free: L is the padded length (the longest row),
     * not the real tokens as for bfd's and bfd_split's padding-free rows.
     */
    @Test
    void wrappedRowsAreNoisedAsAPaddedBatch() {
        long[] ids = {5, 6, 7, 8, 9, 10};
        PackedRow full = new PackedRow(ids, ids, new long[] {0, 1, 2, 3, 4, 5}, new long[6], 6);
        PackedRow rest = new PackedRow(new long[] {5, 6, 2, 2, 2, 2}, new long[] {5, 6, -100, -100, -100, -100},
                new long[] {0, 1, 0, 0, 0, 0}, new long[] {0, 0, -1, -1, -1, -1}, 2);
        TrainingBatch wrapped = TrainingBatch.packed(List.of(full, rest), PackingStrategy.WRAPPED);
        assertEquals(6, EmbeddingNoise.noisedLength(wrapped));
        assertEquals(8, wrapped.realTokens());
        assertEquals(8, EmbeddingNoise.noisedLength(TrainingBatch.packed(List.of(full, rest),
                PackingStrategy.BFD_SPLIT)));
    }

    /**
     * transformers' neftune_post_forward_hook (alpha 5, on zeros [2, 8, 8], training mode) after torch.manual_seed(7 x
     * 1009 - 1), the seed micro-batch seed 7 gives the noise: the same draws bit for bit, as both are torch's uniform_.
     */
    @Test
    void theDrawsAreTransformersHooksFromTheSameTorchSeed() {
        double[] hook = {0.30205920338630676, -0.06449796259403229, 0.3042544424533844, 0.3727279603481293,
            -0.48301881551742554, 0.38797712326049805};
        try (NDManager manager = NDManager.newBaseManager()) {
            NDArray zeros = manager.zeros(new Shape(2, 8, 8), DataType.FLOAT32);
            float[] noise = new EmbeddingNoise(5).apply(zeros, padded(), 7).toFloatArray();
            for (int i = 0; i < hook.length; i++) {
                assertEquals((float) hook[i], noise[i], "draw " + i); // bit for bit
            }
        }
    }

    @Test
    void theSameSeedDrawsTheSameNoiseAndOffDrawsNone() {
        try (NDManager manager = NDManager.newBaseManager()) {
            TrainingBatch batch = padded();
            float[] first = noiseOn(batch, 5, 7, manager);
            noiseOn(batch, 5, 8, manager); // the generator moved on in between
            assertArrayEquals(first, noiseOn(batch, 5, 7, manager));
            assertFalse(Arrays.equals(first, noiseOn(batch, 5, 8, manager)));
            NDArray embeddings = manager.ones(new Shape(2, 8, HIDDEN));
            assertSame(embeddings, EmbeddingNoise.OFF.apply(embeddings, batch, 7));
            assertSame(EmbeddingNoise.OFF, EmbeddingNoise.of(null));
        }
    }

    /**
     * On the tiny Mistral: the training loss with alpha 5 differs from the noiseless one, is the same on the
     * checkpointed path (layer 0 recomputes on the noised embeddings) and again for the same seed; the noiseless
     * backward equals the evaluation forward (which never noises) bit for bit.
     */
    @Test
    void theTrainingLossMovesWithNoiseAndTheEvaluationDoesNot() throws Exception {
        try (NDManager manager = NDManager.newBaseManager()) {
            CheckpointedBackwardTest.Trainable trainable = CheckpointedBackwardTest.Trainable.load("mistral", 0.0,
                    manager);
            CausalLm model = trainable.model();
            TrainingBatch batch = CausalLmLossTest.oneSampleRow(40, model.config().vocabSize());
            EmbeddingNoise noise = new EmbeddingNoise(5);
            double off = CausalLmLoss.backward(model, batch, 1.0, 0, false, 3, EmbeddingNoise.OFF, manager)
                    .crossEntropySum();
            double noised = CausalLmLoss.backward(model, batch, 1.0, 0, false, 3, noise, manager).crossEntropySum();
            double checkpointed = CausalLmLoss.backward(model, batch, 1.0, 0, true, 3, noise, manager)
                    .crossEntropySum();
            double again = CausalLmLoss.backward(model, batch, 1.0, 0, false, 3, noise, manager).crossEntropySum();
            double evaluation;
            try (NDManager step = manager.newSubManager()) {
                evaluation = CausalLmLoss.of(model, batch, step).crossEntropySum().getFloat();
            }
            System.out.printf("cross-entropy sum: off %.7f, alpha 5 %.7f (checkpointed %.7f), evaluation %.7f%n", off,
                    noised, checkpointed, evaluation);
            assertNotEquals(off, noised);
            assertEquals(noised, again);
            assertEquals(noised, checkpointed, 1e-5 * noised);
            assertEquals(off, evaluation);
        }
    }
}
