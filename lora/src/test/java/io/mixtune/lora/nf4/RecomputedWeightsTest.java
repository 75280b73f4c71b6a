package io.mixtune.lora.nf4;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Activation;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import ai.djl.training.GradientCollector;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * A SwiGLU block of three NF4 layers (gate and up read the same input, as q/k/v or an expert's w1/w3 do) times a
 * trainable array: recorded with {@link RecomputedWeights}, the graph holds no dequantized weight (it stops at the
 * layers' outputs), and its backward gives the plain backward's gradients.
 */
class RecomputedWeightsTest {
    private static final int HIDDEN = 64;
    private static final int INTER = 128;

    private final Nf4Linear gate = layer(INTER, HIDDEN, 1);
    private final Nf4Linear up = layer(INTER, HIDDEN, 2);
    private final Nf4Linear down = layer(HIDDEN, INTER, 3);

    @Test
    void gradientsEqualThePlainBackward() {
        try (NDManager manager = NDManager.newBaseManager()) {
            Inputs plain = Inputs.of(manager);
            try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                collector.backward(objective(plain));
            }
            Inputs recorded = Inputs.of(manager);
            try (GradientCollector collector = Engine.getInstance().newGradientCollector();
                    RecomputedWeights recomputed = RecomputedWeights.record(manager)) {
                recomputed.backward(objective(recorded));
            }
            assertClose(plain.x().getGradient().toFloatArray(), recorded.x().getGradient().toFloatArray());
            assertClose(plain.scale().getGradient().toFloatArray(), recorded.scale().getGradient().toFloatArray());
        }
    }

    /** An input that takes no gradient (the first layer's, read from the embeddings) is passed over. */
    @Test
    void anInputWithoutGradientIsPassedOver() {
        try (NDManager manager = NDManager.newBaseManager()) {
            Inputs plain = Inputs.of(manager);
            plain.x().setRequiresGradient(false);
            try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                collector.backward(objective(plain));
            }
            Inputs recorded = Inputs.of(manager);
            recorded.x().setRequiresGradient(false);
            try (GradientCollector collector = Engine.getInstance().newGradientCollector();
                    RecomputedWeights recomputed = RecomputedWeights.record(manager)) {
                recomputed.backward(objective(recorded));
            }
            assertClose(plain.scale().getGradient().toFloatArray(), recorded.scale().getGradient().toFloatArray());
        }
    }

    /** Without the cuts' backward nothing reaches x: the recorded graph does not run through any x W^T. */
    @Test
    void theRecordedGraphStopsAtEachLayersOutput() {
        try (NDManager manager = NDManager.newBaseManager()) {
            Inputs recorded = Inputs.of(manager);
            try (GradientCollector collector = Engine.getInstance().newGradientCollector();
                    RecomputedWeights recomputed = RecomputedWeights.record(manager)) {
                collector.backward(objective(recorded));
            }
            assertNull(JniUtils.getGradient((PtNDArray) recorded.x()), "x got a gradient through a kept weight");
            float[] scaleGradient = recorded.scale().getGradient().toFloatArray();
            assertTrue(Math.abs(scaleGradient[0]) > 0, "the rest of the graph still backpropagates");
        }
    }

    @Test
    void theScopeEndsTheRecordingWhateverHappens() {
        try (NDManager manager = NDManager.newBaseManager()) {
            assertThrows(IllegalStateException.class, () -> {
                try (RecomputedWeights recomputed = RecomputedWeights.record(manager)) {
                    RecomputedWeights.record(manager); // nested: refused
                }
            });
            assertNull(RecomputedWeights.active());
            Inputs plain = Inputs.of(manager);
            try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                collector.backward(objective(plain));
            }
            assertTrue(Math.abs(plain.x().getGradient().toFloatArray()[0]) > 0, "a plain forward after the scope");
        }
    }

    private record Inputs(NDArray x, NDArray scale) {
        static Inputs of(NDManager manager) {
            NDArray x = manager.create(random(3 * 5 * HIDDEN, 11), new Shape(3, 5, HIDDEN));
            NDArray scale = manager.create(random(HIDDEN, 12), new Shape(HIDDEN));
            x.setRequiresGradient(true);
            scale.setRequiresGradient(true);
            return new Inputs(x, scale);
        }
    }

    private NDArray objective(Inputs in) {
        NDArray normed = in.x().mul(2); // an op before the layers, as the norm before q/k/v
        NDArray gated = gate.forward(normed);
        NDArray hidden = gated.mul(Activation.sigmoid(gated)).mul(up.forward(normed));
        return down.forward(hidden).mul(in.scale()).sum();
    }

    private static void assertClose(float[] expected, float[] actual) {
        assertEquals(expected.length, actual.length);
        double max = 0;
        double diff = 0;
        for (int i = 0; i < expected.length; i++) {
            max = Math.max(max, Math.abs(expected[i]));
            diff = Math.max(diff, Math.abs(expected[i] - actual[i]));
        }
        assertTrue(max > 0, "no gradient");
        assertTrue(diff <= 1e-6 * max, "worst difference " + diff + " of max " + max);
    }

    private static Nf4Linear layer(int out, int in, long seed) {
        return new Nf4Linear(Nf4Tensor.quantize(random(out * in, seed), new long[] {out, in}, true));
    }

    private static float[] random(int count, long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] values = new float[count];
        for (int i = 0; i < count; i++) {
            values[i] = (float) random.nextGaussian() * 0.1f;
        }
        return values;
    }
}
