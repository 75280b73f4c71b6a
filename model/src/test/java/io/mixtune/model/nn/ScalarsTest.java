package io.mixtune.model.nn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.training.GradientCollector;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BiFunction;
import org.junit.jupiter.api.Test;

/**
 * Backward through a product with a constant after the garbage collector has run: the gradient must be the constant,
 * whatever happened to Java's memory between forward and backward. DJL's own {@code mul(Number)} fails this: measured,
 * the gradient came back as -1.5e35 instead of 2.5.
 */
class ScalarsTest {
    private static float[] gradientAfterGc(BiFunction<NDArray, Float, NDArray> op, float constant) {
        try (NDManager manager = NDManager.newBaseManager()) {
            NDArray x = manager.create(new float[] {1, 2, 3, 4});
            x.setRequiresGradient(true);
            try (NDManager step = manager.newSubManager();
                    GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                NDArray input = x.mul(step.create(new float[] {1, 1, 1, 1}));
                NDArray y = op.apply(input, constant).sum();
                // Free whatever direct buffers are unreachable and fill the freed memory with other values.
                List<ByteBuffer> noise = new ArrayList<>();
                for (int round = 0; round < 20; round++) {
                    System.gc();
                    for (int i = 0; i < 200; i++) {
                        ByteBuffer buffer = ByteBuffer.allocateDirect(4);
                        buffer.putFloat(0, 1e6f + i);
                        noise.add(buffer);
                    }
                }
                collector.backward(y);
            }
            return x.getGradient().toFloatArray();
        }
    }

    @Test
    void timesKeepsItsConstantAliveForBackward() {
        for (int run = 0; run < 5; run++) {
            assertArrayEquals(new float[] {2.5f, 2.5f, 2.5f, 2.5f}, gradientAfterGc(Scalars::times, 2.5f));
        }
    }

    @Test
    void dividedByKeepsItsConstantAliveForBackward() {
        for (int run = 0; run < 5; run++) {
            assertArrayEquals(new float[] {0.5f, 0.5f, 0.5f, 0.5f}, gradientAfterGc(Scalars::dividedBy, 2f));
        }
    }
}
