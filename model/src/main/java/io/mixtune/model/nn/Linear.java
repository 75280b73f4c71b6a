package io.mixtune.model.nn;

import ai.djl.ndarray.NDArray;

/**
 * A linear layer y = x W^T, as the model asks for it. The model never knows what answers: a {@link DenseLinear}, a
 * 4-bit quantized layer, or a LoRA adapter wrapping either (PEFT's design: adapters wrap layers, they don't patch
 * the model).
 */
public interface Linear {

    /** x [..., inFeatures] to [..., outFeatures]. */
    NDArray forward(NDArray x);

    long inFeatures();

    long outFeatures();

    /**
     * Visited with each linear layer of a model under its Hugging Face module name (for example
     * {@code model.layers.0.block_sparse_moe.experts.3.w1}); returns the layer that takes its place.
     */
    @FunctionalInterface
    interface Replacer {
        Linear replace(String moduleName, Linear current);
    }
}
