package io.mixtune.lora.nf4;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import io.mixtune.model.nn.Linear;

/**
 * A frozen linear layer whose weight is stored in NF4. Each forward dequantizes the weight into the compute dtype,
 * uses it and frees it with the caller's arrays, so no dequantized copy of the model ever exists; the weight takes no
 * gradient (QLoRA trains only the adapters on top).
 */
public final class Nf4Linear implements Linear {
    private final Nf4Tensor weight;
    private final long outFeatures;
    private final long inFeatures;

    public Nf4Linear(Nf4Tensor weight) {
        long[] shape = weight.shape();
        if (shape.length != 2) {
            throw new IllegalArgumentException("a linear weight is [out, in], got " + java.util.Arrays.toString(shape));
        }
        this.weight = weight;
        this.outFeatures = shape[0];
        this.inFeatures = shape[1];
    }

    public Nf4Tensor weight() {
        return weight;
    }

    @Override
    public NDArray forward(NDArray x) {
        NDManager manager = x.getManager();
        NDArray dense = manager.create(weight.dequantize(), new Shape(outFeatures, inFeatures));
        if (x.getDataType() != DataType.FLOAT32) {
            dense = dense.toType(x.getDataType(), false);
        }
        return ai.djl.nn.core.Linear.linear(x, dense).singletonOrThrow();
    }

    @Override
    public long inFeatures() {
        return inFeatures;
    }

    @Override
    public long outFeatures() {
        return outFeatures;
    }
}
