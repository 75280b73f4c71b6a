package io.mixtune.trainer.run;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.trainer.sft.SftGoldenTest;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.nf4.Nf4Loading;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.trainer.optim.GradientClipping;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Gradient checkpointing computes the gradients of the plain backward pass: with LoRA dropout on (the recompute must
 * draw the first pass's masks), an adapter that changes the output, padding (the load-balancing loss counts only real
 * tokens) and, for the Mixtral, the aux loss. The HF goldens check the checkpointed path against transformers too
 * ({@link SftGoldenTest}).
 */
class CheckpointedBackwardTest {
    @ParameterizedTest
    @ValueSource(strings = {"mixtral", "mistral"})
    void checkpointedGradientsEqualThePlainOnes(String name) throws Exception {
        try (NDManager manager = NDManager.newBaseManager()) {
            Trainable trainable = Trainable.load(name, 0.2, manager);
            TrainingBatch batch = paddedBatch(trainable.model().config().vocabSize());
            double worst = assertSameBackward(trainable, batch, false, batch, true, manager);
            System.out.printf("%s: checkpointed vs plain gradients, worst diff %.2e of the array's max%n", name, worst);
        }
    }

    /**
     * With NF4 base weights the recomputed layer keeps none of them for its backward (RecomputedWeights): the
     * gradient of each x W^T is cut out of the graph and put back as g W, W dequantized again. The gradients stay the
     * plain backward's up to float rounding (the g W terms join the sums at another point), in float32 and float16.
     */
    @ParameterizedTest
    @CsvSource({"mixtral, FLOAT32, 1e-5", "mistral, FLOAT32, 1e-5", "mixtral, FLOAT16, 5e-3", "mistral, FLOAT16, 5e-3"})
    void nf4CheckpointedGradientsEqualThePlainOnes(String name, DataType computeType, double tolerance) {
        try (NDManager manager = NDManager.newBaseManager()) {
            Trainable trainable = Trainable.load(name, 0.2, Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION),
                    computeType, manager);
            TrainingBatch batch = paddedBatch(trainable.model().config().vocabSize());
            double worst = assertSameBackward(trainable, batch, false, batch, true, tolerance, manager);
            System.out.printf("%s NF4 %s: checkpointed (weights recomputed) vs plain gradients, worst diff %.2e of "
                    + "the array's max%n", name, computeType, worst);
        }
    }

    /**
     * DoRA reads the base weight twice (its row norms, and with dropout the base output on the dropped input), which
     * under RecomputedWeights is dequantized again rather than kept: the gradients of A, B and the magnitudes stay
     * the plain backward's, with dropout on and off, on NF4 and dense bases, the lm_head included (its autograd path).
     */
    @ParameterizedTest
    @CsvSource({"mistral, false, 0.2", "mistral, true, 0.2", "mistral, true, 0", "mixtral, true, 0.2"})
    void doraCheckpointedGradientsEqualThePlainOnes(String name, boolean nf4, double dropout) {
        List<String> targets = name.equals("mixtral") ? List.of("q_proj", "k_proj", "v_proj", "o_proj", "lm_head")
                : List.of("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head");
        LoraConfig dora = new LoraConfig(4, 8, dropout, targets, false, Map.of(), Map.of()).withDora(true);
        try (NDManager manager = NDManager.newBaseManager()) {
            Trainable trainable = Trainable.load(name, dora, nf4 ? Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION)
                    : MistralCheckpoint.DENSE, DataType.FLOAT32, manager);
            TrainingBatch batch = paddedBatch(trainable.model().config().vocabSize());
            double worst = assertSameBackward(trainable, batch, false, batch, true, manager);
            System.out.printf("%s DoRA (NF4 %s, dropout %s): checkpointed vs plain gradients, worst diff %.2e of the "
                    + "array's max%n", name, nf4, dropout, worst);
        }
    }

    /** A golden tiny model (SftGoldenTest's) with a random all-linear adapter of rank 4, alpha 8, training. */
    record Trainable(CausalLm model, List<NDArray> parameters, double auxWeight) {
        static Trainable load(String name, double dropout, NDManager manager) {
            return load(name, dropout, MistralCheckpoint.DENSE, DataType.FLOAT32, manager);
        }

        static Trainable load(String name, double dropout, MistralCheckpoint.LinearFactory linears,
                DataType computeType, NDManager manager) {
            return load(name, new LoraConfig(4, 8, dropout, List.of("all-linear"), false, Map.of(), Map.of()), linears,
                    computeType, manager);
        }

        static Trainable load(String name, LoraConfig config, MistralCheckpoint.LinearFactory linears,
                DataType computeType, NDManager manager) {
            CausalLm model = MistralCheckpoint.load(SftGoldenTest.golden(name).resolve("model"), manager, linears,
                    computeType);
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", config, LoraModel.Init.RANDOM, 7);
            lora.setTraining(true);
            return new Trainable(model, lora.parameters("default"),
                    model.config().isMixtureOfExperts() ? 0.02 : 0);
        }
    }

    /**
     * Backward of {@code a}, then of {@code b} (each plain or with checkpointing), from zero gradients: asserts equal
     * cross-entropy and load-balancing sums (1e-6 relative) and gradients within 1e-5 of each array's max |value|,
     * every array having one; returns the worst gradient difference.
     */
    static double assertSameBackward(Trainable trainable, TrainingBatch a, boolean checkpointA, TrainingBatch b,
            boolean checkpointB, NDManager manager) {
        return assertSameBackward(trainable, a, checkpointA, b, checkpointB, 1e-5, manager);
    }

    /** As above, gradients within {@code tolerance} of each array's max |value| (and the sums within it too). */
    static double assertSameBackward(Trainable trainable, TrainingBatch a, boolean checkpointA, TrainingBatch b,
            boolean checkpointB, double tolerance, NDManager manager) {
        CausalLmLoss.Values first = backward(trainable, a, checkpointA, manager);
        List<float[]> expected = gradients(trainable.parameters());
        CausalLmLoss.Values second = backward(trainable, b, checkpointB, manager);
        List<float[]> actual = gradients(trainable.parameters());

        double sumTolerance = Math.min(1e-6, tolerance);
        assertEquals(first.crossEntropySum(), second.crossEntropySum(), sumTolerance * first.crossEntropySum());
        if (trainable.auxWeight() > 0) {
            assertEquals(first.loadBalancing(), second.loadBalancing(), sumTolerance * first.loadBalancing());
        }
        double worst = worstRelativeDifference(expected, actual);
        assertTrue(worst < tolerance, "worst relative gradient difference " + worst);
        return worst;
    }

    /** The largest |x - y| over the arrays, each relative to its array's max |x|; every array must have a gradient. */
    static double worstRelativeDifference(List<float[]> expected, List<float[]> actual) {
        double worst = 0;
        for (int i = 0; i < expected.size(); i++) {
            float[] x = expected.get(i);
            float[] y = actual.get(i);
            double max = 0;
            double diff = 0;
            for (int k = 0; k < x.length; k++) {
                max = Math.max(max, Math.abs(x[k]));
                diff = Math.max(diff, Math.abs(x[k] - y[k]));
            }
            assertTrue(max > 0, "array " + i + " got no gradient");
            worst = Math.max(worst, diff / max);
        }
        return worst;
    }

    private static CausalLmLoss.Values backward(Trainable trainable, TrainingBatch batch, boolean checkpointing,
            NDManager manager) {
        GradientClipping.zero(trainable.parameters());
        return CausalLmLoss.backward(trainable.model(), batch, batch.targetCount(), trainable.auxWeight(),
                checkpointing, 1234, manager);
    }

    static List<float[]> gradients(List<NDArray> parameters) {
        List<float[]> gradients = new ArrayList<>();
        for (NDArray parameter : parameters) {
            try (NDArray gradient = parameter.getGradient()) {
                gradients.add(gradient.toFloatArray());
            }
        }
        return gradients;
    }

    /** Two rows of 24 tokens, the second padded after 15, targets on the second half of each row's real tokens. */
    private static TrainingBatch paddedBatch(int vocab) {
        int length = 24;
        int[] real = {24, 15};
        long[][] ids = new long[2][length];
        long[][] labels = new long[2][length];
        long[][] positions = new long[2][length];
        long[][] padding = new long[2][length];
        for (int r = 0; r < 2; r++) {
            for (int t = 0; t < length; t++) {
                boolean isReal = t < real[r];
                ids[r][t] = isReal ? 3 + (r * 31 + t * 7) % (vocab - 3) : 2;
                labels[r][t] = isReal && t >= real[r] / 2 ? ids[r][t] : -100;
                positions[r][t] = t;
                padding[r][t] = isReal ? 1 : 0;
            }
        }
        return new TrainingBatch(ids, labels, positions, null, padding);
    }
}
