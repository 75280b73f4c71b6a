package io.mixtune.model.nn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.GradientCollector;
import org.junit.jupiter.api.Test;

/**
 * Casts autograd follows: widening float16 to float32 by adding -0.0 gives DJL's plain (gradient-free) cast bit for
 * bit, signed zeros, infinities and subnormals included, and the gradient arrives in float16 as the old cumprod cast
 * gave it; the float32 softmax frees its copies without changing its result or gradient.
 */
class CastsTest {
    private static final float[] VALUES = {0f, -0f, 1f, -2.5f, 65504f, -65504f, 6.0e-8f, -6.1e-5f, 0.1f, 3.14159f,
        Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY};

    @Test
    void wideningIsExactAndItsGradientMatchesTheCumprodCast() {
        try (NDManager manager = NDManager.newBaseManager()) {
            NDArray half = manager.create(VALUES).toType(DataType.FLOAT16, false);
            half.setRequiresGradient(true);
            float[] upstreamValues = {1f, -1f, 0.3f, 7f, 1e-3f, 2f, 0.5f, -0.25f, 3f, 1e4f, 1f, 1f};
            NDArray upstream = manager.create(upstreamValues, new Shape(VALUES.length));
            float[] widened;
            try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                NDArray x32 = Casts.to(half, DataType.FLOAT32);
                assertEquals(DataType.FLOAT32, x32.getDataType());
                widened = x32.toFloatArray();
                collector.backward(x32.mul(upstream).sum());
            }
            float[] expected = half.toType(DataType.FLOAT32, false).toFloatArray();
            for (int i = 0; i < VALUES.length; i++) {
                assertEquals(Float.floatToRawIntBits(expected[i]), Float.floatToRawIntBits(widened[i]), "value " + i);
            }
            NDArray gradient = half.getGradient();
            assertEquals(DataType.FLOAT16, gradient.getDataType());
            float[] viaAdd = gradient.toType(DataType.FLOAT32, false).toFloatArray();

            NDArray again = manager.create(VALUES).toType(DataType.FLOAT16, false);
            again.setRequiresGradient(true);
            try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                NDArray x32 = again.expandDims(-1).cumProd(-1, DataType.FLOAT32).squeeze(-1);
                collector.backward(x32.mul(upstream).sum());
            }
            assertArrayEquals(again.getGradient().toType(DataType.FLOAT32, false).toFloatArray(), viaAdd);
        }
    }

    @Test
    void softmaxInFloat32InAHalfArrayEqualsTheUnscopedOne() {
        try (NDManager manager = NDManager.newBaseManager()) {
            float[] scores = {0.5f, -1f, 2f, 0f, 3f, -0.5f, 1f, 1.5f};
            NDArray weights = manager.create(new float[] {1f, 2f, 3f, 4f, -1f, -2f, 0.5f, 0.25f}, new Shape(2, 4))
                    .toType(DataType.FLOAT16, false);
            float[][] results = new float[2][];
            float[][] gradients = new float[2][];
            for (int way = 0; way < 2; way++) {
                NDArray x = manager.create(scores, new Shape(2, 4)).toType(DataType.FLOAT16, false);
                x.setRequiresGradient(true);
                try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                    NDArray probabilities = way == 0 ? Casts.softmaxInFloat32(x, -1)
                            : x.expandDims(-1).cumProd(-1, DataType.FLOAT32).squeeze(-1).softmax(-1).expandDims(-1)
                                    .cumProd(-1, DataType.FLOAT16).squeeze(-1);
                    results[way] = probabilities.toType(DataType.FLOAT32, false).toFloatArray();
                    collector.backward(probabilities.mul(weights).sum());
                }
                gradients[way] = x.getGradient().toType(DataType.FLOAT32, false).toFloatArray();
            }
            assertArrayEquals(results[1], results[0]);
            assertArrayEquals(gradients[1], gradients[0]);
        }
    }
}
