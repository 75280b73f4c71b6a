package io.mixtune.merging;

import java.util.List;

/**
 * mergekit's nearswap: with a the base's entry and b the model's, w = clamp(t / max(|a - b|, 1e-6), 0, 1) and
 * out = w b + (1 - w) a: an entry within t of the base's becomes the model's, a farther one moves t towards it.
 */
final class NearSwap implements TensorMerge {
    private final double t;

    NearSwap(double t) {
        this.t = t;
    }

    @Override
    public float[] merge(String name, float[] base, List<float[]> models) {
        float[] model = models.get(0);
        for (int j = 0; j < base.length; j++) {
            double a = base[j];
            double b = model[j];
            double w = Math.max(0, Math.min(1, t / Math.max(Math.abs(a - b), 1e-6)));
            base[j] = (float) (w * b + (1 - w) * a);
        }
        return base;
    }
}
