package io.mixtune.trainer.run;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.training.GradientCollector;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Scalars;
import io.mixtune.trainer.optim.GradientClipping;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The cross-entropy computes the logits a chunk of target positions at a time; the loss and the gradients must be
 * those of all the logits at once, whatever the chunk (here one that does not divide the 299 targets).
 */
class CausalLmLossTest {
    @Test
    void chunkedLogitsGiveTheLossAndGradientsOfOneBlock() throws Exception {
        try (NDManager manager = NDManager.newBaseManager()) {
            CheckpointedBackwardTest.Trainable trainable = CheckpointedBackwardTest.Trainable.load("mixtral", 0.0,
                    manager);
            TrainingBatch batch = oneSampleRow(300, trainable.model().config().vocabSize());
            assertEquals(299, batch.targetCount());

            double oneBlock = backward(trainable, batch, Integer.MAX_VALUE, manager);
            List<float[]> expected = CheckpointedBackwardTest.gradients(trainable.parameters());
            double chunked = backward(trainable, batch, 7, manager);
            List<float[]> actual = CheckpointedBackwardTest.gradients(trainable.parameters());

            assertEquals(oneBlock, chunked, 1e-6 * oneBlock);
            double worst = CheckpointedBackwardTest.worstRelativeDifference(expected, actual);
            System.out.printf("cross-entropy sum in one block %.7g, in chunks of 7 %.7g; worst gradient diff %.2e of "
                    + "the array's max%n", oneBlock, chunked, worst);
            assertTrue(worst < 1e-5, "worst relative gradient difference " + worst);
        }
    }

    private static double backward(CheckpointedBackwardTest.Trainable trainable, TrainingBatch batch, int chunkRows,
            NDManager manager) {
        GradientClipping.zero(trainable.parameters());
        try (NDManager step = manager.newSubManager();
                GradientCollector collector = Engine.getInstance().newGradientCollector()) {
            CausalLmLoss.Inputs in = CausalLmLoss.inputs(trainable.model(), batch, step);
            NDArray states = trainable.model().hiddenStates(in.inputIds(), in.positionIds(), in.mask(), null).states();
            NDArray sum = CausalLmLoss.crossEntropySum(trainable.model(), states, batch, step, chunkRows, null);
            collector.backward(sum);
            return sum.getFloat();
        }
    }

    /**
     * The correct-prediction count behind mean_token_accuracy: targets chosen to be their position's argmax (every
     * third) or not, counted by hand from the logits of the whole row, equal the chunked count.
     */
    @Test
    void correctPredictionsAreTheTargetsThatAreTheirLogitsArgmax() throws Exception {
        try (NDManager manager = NDManager.newBaseManager()) {
            CheckpointedBackwardTest.Trainable trainable = CheckpointedBackwardTest.Trainable.load("mixtral", 0.0,
                    manager);
            int vocab = trainable.model().config().vocabSize();
            TrainingBatch row = oneSampleRow(60, vocab);
            CausalLmLoss.Inputs in = CausalLmLoss.inputs(trainable.model(), row, manager);
            NDArray states = trainable.model().hiddenStates(in.inputIds(), in.positionIds(), in.mask(), null).states();
            float[] logits = trainable.model().logits(states.reshape(60, -1)).toFloatArray();
            long[] labels = new long[60];
            labels[0] = -100;
            int expected = 0;
            for (int t = 1; t < 60; t++) {
                int best = 0;
                for (int v = 1; v < vocab; v++) {
                    if (logits[(t - 1) * vocab + v] > logits[(t - 1) * vocab + best]) {
                        best = v;
                    }
                }
                boolean hit = t % 3 == 0;
                labels[t] = hit ? best : (best + 1) % vocab;
                expected += hit ? 1 : 0;
            }
            TrainingBatch batch = new TrainingBatch(row.inputIds(), new long[][] {labels}, row.positionIds(),
                    row.sampleIds(), null);
            CausalLmLoss.TokenStatistics[] statistics = new CausalLmLoss.TokenStatistics[1];
            CausalLmLoss.crossEntropySum(trainable.model(), states, batch, manager, 7, statistics);
            assertEquals(expected, statistics[0].argmaxHitCount());
            assertEquals(expected, CausalLmLoss.of(trainable.model(), batch, manager).correctPredictions());
        }
    }

    /**
     * The training backward computes the head's gradient without autograd ({@link CausalLmLoss#headGradient}): the
     * accuracy count is autograd's (the plain chunked cross-entropy / divisor + the weighted load-balancing loss), the
     * loss within a relative 1e-6 (log of the softmax against log-softmax: rounding), on Mistral and Mixtral, over
     * several chunks; the adapter gradients within 1e-5 of each array's largest, the tolerance of chunked against one
     * block (about 1e-6 measured). Not bit for bit: libtorch's softmax and log_softmax's backward use other exp
     * kernels, and the 1 / divisor factor is applied after the head's matmul instead of before.
     */
    @Test
    void theHeadsGradientWithoutAutogradIsAutogradsOne() throws Exception {
        for (String name : List.of("mistral", "mixtral")) {
            try (NDManager manager = NDManager.newBaseManager()) {
                CheckpointedBackwardTest.Trainable trainable = CheckpointedBackwardTest.Trainable.load(name, 0.0,
                        manager);
                CausalLm model = trainable.model();
                TrainingBatch batch = oneSampleRow(300, model.config().vocabSize());
                double divisor = 1234.5;

                GradientClipping.zero(trainable.parameters());
                double expectedSum;
                long expectedCorrect;
                double expectedEntropySum;
                try (NDManager step = manager.newSubManager();
                        GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                    CausalLmLoss.Terms terms = CausalLmLoss.of(model, batch, step);
                    NDArray objective = Scalars.dividedBy(terms.crossEntropySum(), divisor);
                    if (terms.loadBalancing() != null) {
                        objective = objective.add(Scalars.times(terms.loadBalancing(), trainable.auxWeight()));
                    }
                    collector.backward(objective);
                    expectedSum = terms.crossEntropySum().getFloat();
                    expectedCorrect = terms.correctPredictions();
                    expectedEntropySum = terms.entropySum();
                }
                List<float[]> expected = CheckpointedBackwardTest.gradients(trainable.parameters());

                GradientClipping.zero(trainable.parameters());
                CausalLmLoss.Values values = CausalLmLoss.backward(model, batch, divisor, trainable.auxWeight(), false,
                        0, manager);
                List<float[]> actual = CheckpointedBackwardTest.gradients(trainable.parameters());

                System.out.printf("%s: cross-entropy sum %.9g by autograd, %.9g without%n", name, expectedSum,
                        values.crossEntropySum());
                assertEquals(expectedSum, values.crossEntropySum(), 1e-6 * Math.abs(expectedSum), name);
                assertEquals(expectedCorrect, values.correctPredictions(), name);
                System.out.printf("%s: entropy sum %.9g from log-softmax, %.9g from the softmax%n", name,
                        expectedEntropySum, values.entropySum());
                assertEquals(expectedEntropySum, values.entropySum(), 1e-6 * expectedEntropySum, name);
                double worst = CheckpointedBackwardTest.worstRelativeDifference(expected, actual);
                System.out.printf("%s: head gradient without autograd, worst gradient diff %.2e of the array's max%n",
                        name, worst);
                assertTrue(worst < 1e-5, name + ": worst relative gradient difference " + worst);
            }
        }
    }

    /**
     * A target whose probability is below the smallest normal float has no usable log(softmax): the loss is then taken
     * by log-softmax, autograd's sum bit for bit (here the head's weight is scaled so that logits lie hundreds apart;
     * log of the flushed probabilities gave an infinite loss), and so are the accuracy count and the entropy.
     */
    @Test
    void targetsTooUnlikelyForTheSoftmaxTakeTheLossByLogSoftmax() throws Exception {
        try (NDManager manager = NDManager.newBaseManager()) {
            CheckpointedBackwardTest.Trainable trainable = CheckpointedBackwardTest.Trainable.load("mistral", 0.0,
                    manager);
            CausalLm model = trainable.model();
            NDArray head = model.denseHeadWeight().orElseThrow();
            head.muli(2000);
            TrainingBatch batch = oneSampleRow(300, model.config().vocabSize());
            double expectedSum;
            CausalLmLoss.Terms terms;
            try (NDManager step = manager.newSubManager()) {
                terms = CausalLmLoss.of(model, batch, step);
                expectedSum = terms.crossEntropySum().getFloat();
            }
            CausalLmLoss.Values values = CausalLmLoss.backward(model, batch, 1.0, trainable.auxWeight(), false, 0,
                    manager);
            System.out.printf("logits hundreds apart: cross-entropy sum %.9g by autograd, %.9g without%n",
                    expectedSum, values.crossEntropySum());
            assertTrue(expectedSum > 300 * 88, "the case must hold targets whose probability underflows");
            assertEquals(expectedSum, values.crossEntropySum());
            assertEquals(terms.correctPredictions(), values.correctPredictions());
            assertEquals(terms.entropySum(), values.entropySum());
        }
    }

    /** One packed row holding one sample of {@code length} tokens, every token after the first a target. */
    static TrainingBatch oneSampleRow(int length, int vocab) {
        long[] ids = new long[length];
        long[] labels = new long[length];
        long[] positions = new long[length];
        long[] samples = new long[length];
        for (int t = 0; t < length; t++) {
            ids[t] = 3 + (t * 7919L) % (vocab - 3);
            labels[t] = t == 0 ? -100 : ids[t];
            positions[t] = t;
        }
        return new TrainingBatch(new long[][] {ids}, new long[][] {labels}, new long[][] {positions},
                new long[][] {samples}, null);
    }
}
