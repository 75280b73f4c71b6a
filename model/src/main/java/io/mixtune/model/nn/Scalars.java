package io.mixtune.model.nn;

import ai.djl.ndarray.NDArray;

/**
 * Arithmetic with a constant on arrays that autograd differentiates through. DJL's {@code mul(Number)} and
 * {@code div(Number)} wrap the constant in a 0-dim array backed by a Java direct buffer and close that array as soon
 * as the op returns, while autograd keeps the constant for backward (d(x*c)/dx = c): once the garbage collector frees
 * the buffer, backward reads freed memory and the gradients come out wrong or NaN, differently from run to run. Here
 * the constant lives in x's manager, so it outlives the backward pass that closes with x's step.
 */
public final class Scalars {
    private Scalars() {}

    /** x * factor, in x's dtype (a float32 0-dim constant does not promote a float16 x). */
    public static NDArray times(NDArray x, double factor) {
        return x.mul(x.getManager().create((float) factor));
    }

    /** x / divisor, in x's dtype. */
    public static NDArray dividedBy(NDArray x, double divisor) {
        return x.div(x.getManager().create((float) divisor));
    }
}
