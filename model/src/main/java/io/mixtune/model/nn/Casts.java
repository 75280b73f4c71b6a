package io.mixtune.model.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;

/**
 * Dtype casts that autograd follows. DJL's {@code toType} runs under torch's NoGradGuard (its JNI {@code torchTo}), so
 * the cast array has no grad_fn: in float16 compute a float32 LoRA update cast that way would get no gradient, nor
 * would anything before a norm or a softmax computed in float32. {@code cumprod} takes an output dtype, casts its input
 * to it first, and is differentiated by torch; over a new axis of length 1 it is the identity.
 */
public final class Casts {
    private Casts() {}

    /** x in {@code type} (x itself when it already is), with gradients flowing back to x in x's type. */
    public static NDArray to(NDArray x, DataType type) {
        if (x.getDataType() == type) {
            return x;
        }
        return x.expandDims(-1).cumProd(-1, type).squeeze(-1);
    }

    /** Softmax along {@code axis} computed in float32, as transformers does for attention and routing, in x's type. */
    public static NDArray softmaxInFloat32(NDArray x, int axis) {
        return to(to(x, DataType.FLOAT32).softmax(axis), x.getDataType());
    }
}
