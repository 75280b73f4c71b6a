package io.mixtune.model.generate;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.Arrays;

/**
 * Mistral's rolling buffer cache (Jiang et al. 2023, section 2): with a sliding window W no query looks further back
 * than W - 1 tokens, so W slots suffice and the token at sequence index i lives in slot i mod W. Memory is fixed by W
 * however long the text grows.
 */
public final class RollingKvCache implements KvCache {
    private final NDManager manager;
    private final int window;
    private final NDArray[] keySlots;
    private final NDArray[] valueSlots;
    private final long[] slotIndex;
    private long length;
    private long stepStart = -1;
    private int stepTokens;

    public RollingKvCache(NDManager parent, int layers, long batch, int keyValueHeads, int headDim, int window,
            DataType dataType) {
        this.manager = parent.newSubManager();
        this.window = window;
        this.keySlots = new NDArray[layers];
        this.valueSlots = new NDArray[layers];
        Shape shape = new Shape(batch, keyValueHeads, window, headDim);
        for (int i = 0; i < layers; i++) {
            keySlots[i] = manager.zeros(shape, dataType);
            valueSlots[i] = manager.zeros(shape, dataType);
        }
        this.slotIndex = new long[window];
        Arrays.fill(slotIndex, -1);
    }

    @Override
    public long[] beginStep(long firstIndex, int newTokens) {
        if (firstIndex != length) {
            throw new IllegalStateException("the next token is at index " + length + ", not " + firstIndex);
        }
        if (newTokens > window) {
            throw new IllegalArgumentException("a step of " + newTokens + " tokens exceeds the window " + window
                    + ": prefill long prompts in chunks of at most the window");
        }
        stepStart = firstIndex;
        stepTokens = newTokens;
        long[] keys = Arrays.copyOf(slotIndex, window + newTokens);
        for (int i = 0; i < newTokens; i++) {
            keys[window + i] = firstIndex + i;
        }
        return keys;
    }

    @Override
    public Layer layer(int index) {
        return (keys, values) -> {
            if (stepStart < 0) {
                throw new IllegalStateException("append outside a step: call beginStep first");
            }
            NDManager stepManager = keys.getManager();
            NDArray allKeys = keySlots[index].concat(keys, 2);
            NDArray allValues = valueSlots[index].concat(values, 2);
            allKeys.attach(stepManager);
            allValues.attach(stepManager);
            writeSlots(keySlots[index], keys);
            writeSlots(valueSlots[index], values);
            return new Entries(allKeys, allValues);
        };
    }

    /** Copies the step's tokens into slots (index mod W): at most two contiguous runs, since the buffer wraps once. */
    private void writeSlots(NDArray slots, NDArray fresh) {
        int written = 0;
        while (written < stepTokens) {
            int slot = (int) ((stepStart + written) % window);
            int run = Math.min(stepTokens - written, window - slot);
            try (NDArray part = fresh.get(new NDIndex(":, :, {}:{}", written, written + run))) {
                slots.set(new NDIndex(":, :, {}:{}", slot, slot + run), part);
            }
            written += run;
        }
    }

    @Override
    public void endStep() {
        for (int i = 0; i < stepTokens; i++) {
            long index = stepStart + i;
            slotIndex[(int) (index % window)] = index;
        }
        length = stepStart + stepTokens;
        stepStart = -1;
    }

    @Override
    public long length() {
        return length;
    }

    @Override
    public int maxStepTokens() {
        return window;
    }

    @Override
    public void close() {
        manager.close();
    }
}
