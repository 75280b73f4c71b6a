package io.mixtune.trainer.optim;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.training.GradientCollector;
import java.util.List;
import org.junit.jupiter.api.Test;

/** AdamW, clipping and schedules against values computed by hand from torch's formulas. */
class AdamWTest {
    @Test
    void twoStepsMatchTorchAdamWByHand() {
        try (NDManager manager = NDManager.newBaseManager()) {
            NDArray p = manager.create(new float[] {1.0f, -2.0f});
            p.setRequiresGradient(true);
            AdamW adam = new AdamW(List.of(p), 0.9, 0.999, 1e-8, 0.1);
            double[] expected = {1.0, -2.0};
            double[] m = new double[2];
            double[] v = new double[2];
            for (int step = 1; step <= 2; step++) {
                GradientClipping.zero(List.of(p));
                try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                    collector.backward(p.mul(p).mul(p).sum()); // grad 3 p^2
                }
                double lr = 0.01 * step;
                for (int i = 0; i < 2; i++) {
                    double g = 3 * expected[i] * expected[i];
                    expected[i] *= 1 - lr * 0.1;
                    m[i] = 0.9 * m[i] + 0.1 * g;
                    v[i] = 0.999 * v[i] + 0.001 * g * g;
                    double denom = Math.sqrt(v[i]) / Math.sqrt(1 - Math.pow(0.999, step)) + 1e-8;
                    expected[i] -= lr / (1 - Math.pow(0.9, step)) * m[i] / denom;
                }
                adam.step(lr);
                float[] actual = p.toFloatArray();
                for (int i = 0; i < 2; i++) {
                    assertEquals(expected[i], actual[i], 1e-6, "step " + step + " element " + i);
                }
            }
            // The gradient handles the optimizer closed still read the live gradient.
            try (NDArray gradient = p.getGradient()) {
                assertEquals(3 * 1.0 * 1.0, gradient.toFloatArray()[0], 0.2);
            }
        }
    }

    @Test
    void clippingScalesToTheMaximumNormAndReportsTheNormBefore() {
        try (NDManager manager = NDManager.newBaseManager()) {
            NDArray a = manager.create(new float[] {3, 0});
            NDArray b = manager.create(new float[] {0, 4});
            a.setRequiresGradient(true);
            b.setRequiresGradient(true);
            try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                collector.backward(a.mul(a).sum().div(2).add(b.mul(b).sum().div(2))); // grads = values
            }
            assertEquals(5.0, GradientClipping.clip(List.of(a, b), 1.0), 1e-6);
            double scale = 1.0 / (5.0 + 1e-6);
            assertArrayEquals(new float[] {(float) (3 * scale), 0}, a.getGradient().toFloatArray(), 1e-7f);
            assertArrayEquals(new float[] {0, (float) (4 * scale)}, b.getGradient().toFloatArray(), 1e-7f);
            assertEquals(1.0, GradientClipping.clip(List.of(a, b), 2.0), 1e-5); // below the maximum: untouched
            assertEquals(1.0, GradientClipping.globalNorm(List.of(a, b)), 1e-5);
        }
    }

    @Test
    void schedulesFollowTransformers() {
        // get_cosine_schedule_with_warmup(warmup 2, total 10) at steps 0..: 0, 0.5, 1, cos..., 0 at the end
        LearningRateSchedule cosine = new LearningRateSchedule("cosine", 1.0, 2, 10);
        assertEquals(0.0, cosine.at(0));
        assertEquals(0.5, cosine.at(1));
        assertEquals(1.0, cosine.at(2));
        assertEquals(0.5 * (1 + Math.cos(Math.PI * 3 / 8)), cosine.at(5), 1e-12);
        assertEquals(0.0, cosine.at(10), 1e-12);
        LearningRateSchedule linear = new LearningRateSchedule("linear", 2.0, 1, 5);
        assertEquals(0.0, linear.at(0));
        assertEquals(2.0, linear.at(1));
        assertEquals(2.0 * 3 / 4, linear.at(2), 1e-12);
        assertEquals(0.0, linear.at(5));
        LearningRateSchedule constant = new LearningRateSchedule("constant", 3.0, 4, 100);
        assertEquals(1.5, constant.at(2));
        assertEquals(3.0, constant.at(50));
    }
}
