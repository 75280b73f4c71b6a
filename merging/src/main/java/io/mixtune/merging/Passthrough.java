package io.mixtune.merging;

import java.util.List;

/**
 * mergekit's passthrough: the one source's tensor as it is, times {@code scale} where one is given (frankenmerge configs
 * use a filtered scale of 0 to silence a stacked layer's o_proj and down_proj).
 */
final class Passthrough implements TensorMerge {
    private final double scale;

    Passthrough(double scale) {
        this.scale = scale;
    }

    @Override
    public float[] merge(String name, float[] base, List<float[]> models) {
        float[] tensor = models.get(0);
        if (scale != 1) {
            for (int j = 0; j < tensor.length; j++) {
                tensor[j] = (float) (tensor[j] * scale);
            }
        }
        return tensor;
    }
}
