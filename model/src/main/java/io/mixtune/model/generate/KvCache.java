package io.mixtune.model.generate;

import ai.djl.ndarray.NDArray;

/**
 * Keys and values of the tokens already seen, one store per layer, so each generation step runs only the new tokens.
 *
 * <p>A step is: {@link #beginStep} (which says, for the attention mask, which sequence index each key will hold), one
 * {@link Layer#append} per layer, then {@link #endStep}.
 */
public interface KvCache extends AutoCloseable {

    /** The keys the next step attends over, as sequence indices, -1 for an empty slot; the new tokens come last. */
    long[] beginStep(long firstIndex, int newTokens);

    Layer layer(int index);

    void endStep();

    /** How many tokens the cache has seen (the sequence index of the next token). */
    long length();

    /** The most new tokens one step may bring (the window for a rolling cache). */
    int maxStepTokens();

    @Override
    void close();

    interface Layer {
        /**
         * Stores this step's keys and values [B, kvHeads, T, headDim] and returns all keys and values the step attends
         * over, in the order {@link #beginStep} gave, owned by the manager of {@code keys}.
         */
        Entries append(NDArray keys, NDArray values);
    }

    record Entries(NDArray keys, NDArray values) {}
}
