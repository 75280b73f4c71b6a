package io.mixtune.model.generate;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;

/** Without a sliding window every token attends to all before it, so the cache keeps every key and grows. */
public final class GrowingKvCache implements KvCache {
    private final NDManager manager;
    private final NDArray[] keys;
    private final NDArray[] values;
    private long length;
    private long stepStart = -1;
    private int stepTokens;

    public GrowingKvCache(NDManager parent, int layers) {
        this.manager = parent.newSubManager();
        this.keys = new NDArray[layers];
        this.values = new NDArray[layers];
    }

    @Override
    public long[] beginStep(long firstIndex, int newTokens) {
        if (firstIndex != length) {
            throw new IllegalStateException("the next token is at index " + length + ", not " + firstIndex);
        }
        stepStart = firstIndex;
        stepTokens = newTokens;
        long[] indices = new long[(int) (firstIndex + newTokens)];
        for (int i = 0; i < indices.length; i++) {
            indices[i] = i;
        }
        return indices;
    }

    @Override
    public Layer layer(int index) {
        return (newKeys, newValues) -> {
            NDArray allKeys = keys[index] == null ? newKeys : keys[index].concat(newKeys, 2);
            NDArray allValues = values[index] == null ? newValues : values[index].concat(newValues, 2);
            // Owned by the step until endStep adopts them, so everything computed from them is freed with the step.
            allKeys.attach(newKeys.getManager());
            allValues.attach(newKeys.getManager());
            replace(keys, index, allKeys);
            replace(values, index, allValues);
            return new Entries(allKeys, allValues);
        };
    }

    private void replace(NDArray[] store, int index, NDArray next) {
        if (store[index] != null && store[index] != next && store[index].getManager() == manager) {
            store[index].close();
        }
        store[index] = next;
    }

    @Override
    public void endStep() {
        for (int i = 0; i < keys.length; i++) {
            if (keys[i] != null) {
                keys[i].attach(manager);
                values[i].attach(manager);
            }
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
        return Integer.MAX_VALUE;
    }

    @Override
    public void close() {
        manager.close();
    }
}
