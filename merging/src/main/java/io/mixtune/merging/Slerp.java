package io.mixtune.merging;

import java.util.List;

/**
 * Spherical linear interpolation of two tensors, each flattened to one vector (mergekit's slerp, after Shoemake 1985):
 * with cos(theta) the cosine between them, x = sin((1 - t) theta) / sin(theta) x0 + sin(t theta) / sin(theta) x1. Where
 * |cos| > 0.9995 the vectors are nearly colinear, sin(theta) nears 0 and the weights blow up in rounding, so it falls
 * back to the linear (1 - t) x0 + t x1, as mergekit does. A vector of norm <= 1e-8 is not normalised (cos then 0).
 */
final class Slerp implements TensorMerge {
    static final double COLINEAR = 0.9995;
    private static final double EPS = 1e-8;

    private final double t;

    Slerp(double t) {
        this.t = t;
    }

    @Override
    public float[] merge(String name, float[] base, List<float[]> models) {
        float[] x0 = models.get(0);
        float[] x1 = models.get(1);
        double cos = cosine(x0, x1);
        double c0;
        double c1;
        if (Math.abs(cos) > COLINEAR) {
            c0 = 1 - t;
            c1 = t;
        } else {
            double theta = Math.acos(cos);
            c0 = Math.sin((1 - t) * theta) / Math.sin(theta);
            c1 = Math.sin(t * theta) / Math.sin(theta);
        }
        for (int j = 0; j < x0.length; j++) {
            x0[j] = (float) (c0 * x0[j] + c1 * x1[j]);
        }
        return x0;
    }

    static double cosine(float[] x0, float[] x1) {
        double dot = 0;
        double norm0 = 0;
        double norm1 = 0;
        for (int j = 0; j < x0.length; j++) {
            dot += (double) x0[j] * x1[j];
            norm0 += (double) x0[j] * x0[j];
            norm1 += (double) x1[j] * x1[j];
        }
        norm0 = Math.sqrt(norm0);
        norm1 = Math.sqrt(norm1);
        return dot / (norm0 > EPS ? norm0 : 1) / (norm1 > EPS ? norm1 : 1);
    }
}
