package io.mixtune.model.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;

/**
 * Root-mean-square layer norm (Zhang and Sennrich 2019) as Mistral computes it: the statistics in float32 whatever
 * the compute dtype, then the weight applied to the result cast back.
 */
public final class RmsNorm {
    private final NDArray weight;
    private final float eps;

    public RmsNorm(NDArray weight, double eps) {
        this.weight = weight;
        this.eps = (float) eps;
    }

    public NDArray weight() {
        return weight;
    }

    public NDArray forward(NDArray x) {
        DataType inputType = x.getDataType();
        NDArray x32 = Casts.to(x, DataType.FLOAT32);
        NDArray variance = x32.square().mean(new int[] {-1}, true);
        NDArray normalized = x32.div(variance.add(eps).sqrt());
        return Casts.to(normalized, inputType).mul(weight);
    }
}
