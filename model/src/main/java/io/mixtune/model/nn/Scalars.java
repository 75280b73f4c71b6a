package io.mixtune.model.nn;

import ai.djl.ndarray.NDArray;

/**
 * Arithmetic with a constant on arrays that autograd differentiates through. DJL's {@code mul(Number)} and
 * {@code div(Number)} wrap the constant in a 0-dim array backed by a Java direct buffer and close that array as soon
 * as the op returns, while autograd keeps the constant for backward (d(x*c)/dx = c): once the garbage collector frees
 * the buffer, backward reads freed memory and the gradients come out wrong or NaN, differently from run to run. Here
 * the constant is copied into libtorch's own memory, which autograd's reference keeps alive.
 */
public final class Scalars {
    private Scalars() {}

    /** x * factor, in x's dtype (a float32 0-dim constant does not promote a float16 x). */
    public static NDArray times(NDArray x, double factor) {
        try (NDArray constant = constant(x, factor)) {
            return x.mul(constant);
        }
    }

    /** x / divisor, in x's dtype. */
    public static NDArray dividedBy(NDArray x, double divisor) {
        try (NDArray constant = constant(x, divisor)) {
            return x.div(constant);
        }
    }

    /**
     * The constant copied into memory libtorch owns: autograd's reference then keeps it alive whatever happens to the
     * array, so it may be closed at once (and a layer may free its intermediates early without breaking backward).
     * It is a 0-dim array in host memory whatever x's device: torch takes a 0-dim CPU tensor as a scalar argument of a
     * CUDA kernel, where a constant made on the GPU is an upload from Java's buffer that waits for the device's queue
     * to drain, several times per layer. On a CPU it is the same array as before.
     */
    private static NDArray constant(NDArray x, double value) {
        try (NDArray javaBacked = HostConstants.MANAGER.create((float) value)) {
            return javaBacked.duplicate();
        }
    }
}
