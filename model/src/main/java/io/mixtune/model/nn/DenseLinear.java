package io.mixtune.model.nn;

import ai.djl.ndarray.NDArray;

/** A full-precision linear layer without bias (Mistral and Mixtral have none). */
public final class DenseLinear implements Linear {
    private final NDArray weight;

    /** @param weight [outFeatures, inFeatures], the layout of PyTorch's nn.Linear and of the checkpoint */
    public DenseLinear(NDArray weight) {
        if (weight.getShape().dimension() != 2) {
            throw new IllegalArgumentException("a linear weight is [out, in], got shape " + weight.getShape());
        }
        this.weight = weight;
    }

    public NDArray weight() {
        return weight;
    }

    @Override
    public NDArray forward(NDArray x) {
        return ai.djl.nn.core.Linear.linear(x, weight).singletonOrThrow();
    }

    @Override
    public long inFeatures() {
        return weight.getShape().get(1);
    }

    @Override
    public long outFeatures() {
        return weight.getShape().get(0);
    }
}
