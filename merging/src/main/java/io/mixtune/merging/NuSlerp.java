package io.mixtune.merging;

import java.util.List;

/**
 * mergekit's nuslerp: the two models (with a base, their task vectors, added back to it) interpolated on the sphere at
 * t = w_1 / (w_0 + w_1) (0.5 where |w_0 + w_1| < 1e-6), over vectors that are the whole tensor ({@code flatten}, the
 * default), else each row (the last dimension), or with {@code rowWise} each column (along the first dimension). Per
 * vector: u = v / max(|v|, 1e-7), theta = acos(clamp(u_0 . u_1, -1, 1)), out = (sin((1 - t) theta) v_0 +
 * sin(t theta) v_1) / sin(theta), linear where |sin(theta)| < 1e-8. Sums run in double.
 */
final class NuSlerp implements TensorMerge {
    private final double t;
    private final boolean flatten;
    private final boolean rowWise;

    NuSlerp(double weight0, double weight1, boolean flatten, boolean rowWise) {
        this.t = Math.abs(weight0 + weight1) < 1e-6 ? 0.5 : weight1 / (weight0 + weight1);
        this.flatten = flatten;
        this.rowWise = rowWise;
    }

    @Override
    public float[] merge(String name, float[] base, List<float[]> models) {
        return merge(name, new long[] {models.get(0).length}, base, models);
    }

    @Override
    public float[] merge(String name, long[] shape, float[] base, List<float[]> models) {
        float[] x0 = models.get(0);
        float[] x1 = models.get(1);
        int length = x0.length;
        // A vector is `count` entries `stride` apart; the vectors start at every offset of `starts` (step `startStep`).
        int count;
        int stride;
        int vectors;
        int startStep;
        if (flatten || shape.length < 2) {
            count = length;
            stride = 1;
            vectors = 1;
            startStep = length;
        } else if (rowWise) {
            count = (int) shape[0];
            stride = length / count;
            vectors = stride;
            startStep = 1;
        } else {
            count = (int) shape[shape.length - 1];
            stride = 1;
            vectors = length / count;
            startStep = count;
        }
        for (int v = 0; v < vectors; v++) {
            int start = v * startStep;
            double dot = 0;
            double norm0 = 0;
            double norm1 = 0;
            for (int k = 0, j = start; k < count; k++, j += stride) {
                double a = delta(x0, base, j);
                double b = delta(x1, base, j);
                dot += a * b;
                norm0 += a * a;
                norm1 += b * b;
            }
            double cos = dot / Math.max(Math.sqrt(norm0), 1e-7) / Math.max(Math.sqrt(norm1), 1e-7);
            double theta = Math.acos(Math.max(-1, Math.min(1, cos)));
            double sin = Math.sin(theta);
            double c0 = Math.abs(sin) < 1e-8 ? 1 - t : Math.sin((1 - t) * theta) / sin;
            double c1 = Math.abs(sin) < 1e-8 ? t : Math.sin(t * theta) / sin;
            for (int k = 0, j = start; k < count; k++, j += stride) {
                double merged = c0 * delta(x0, base, j) + c1 * delta(x1, base, j);
                x0[j] = (float) (base == null ? merged : base[j] + merged);
            }
        }
        return x0;
    }

    /** The model's entry, less the base's where there is one (a task vector, float32 as mergekit subtracts). */
    private static double delta(float[] model, float[] base, int j) {
        return base == null ? model[j] : (float) (model[j] - base[j]);
    }
}
