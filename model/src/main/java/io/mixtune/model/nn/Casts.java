package io.mixtune.model.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;

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
        if (x.getDataType() == DataType.FLOAT16 && type == DataType.FLOAT32) {
            // Widening: x + (-0.0) in float32 is x exactly, signed zeros included, and promotes the sum to float32;
            // add's backward keeps no tensor, where cumprod's keeps its input and output for the whole backward.
            try (NDArray negativeZero = x.getManager().create(new float[] {-0.0f}, new Shape(1))) {
                return x.add(negativeZero);
            }
        }
        try (NDArray column = x.expandDims(-1); NDArray cast = column.cumProd(-1, type)) {
            return cast.squeeze(-1); // a view: it keeps cast's memory, so only the arrays' handles close here
        }
    }

    /** Softmax along {@code axis} computed in float32, as transformers does for attention and routing, in x's type. */
    public static NDArray softmaxInFloat32(NDArray x, int axis) {
        if (x.getDataType() == DataType.FLOAT32) {
            return x.softmax(axis);
        }
        // The float32 copies go as soon as the result exists: autograd keeps the softmax's output, nothing else.
        try (NDArray x32 = to(x, DataType.FLOAT32); NDArray probabilities = x32.softmax(axis)) {
            return to(probabilities, x.getDataType());
        }
    }
}
