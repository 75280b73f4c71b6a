package io.mixtune.model.mistral;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;

/**
 * Additive attention masks, [B, 1, queries, keys]: 0 where a query may look, the dtype's lowest finite value where it
 * may not (as transformers does, so a fully masked padding row softmaxes to a uniform row instead of NaN).
 *
 * <p>Everything is in sequence indices (a token's place in its row or in the generated text), never in position ids,
 * which restart when samples are packed: query i sees key j iff j <= i, i - W < j with a sliding window W, the key is
 * not padding, and both belong to the same packed sample.
 */
public final class AttentionMask {
    private AttentionMask() {}

    /**
     * For a batch of whole rows.
     *
     * @param paddingMask [B, T], 1 for real tokens and 0 for padding, or null when nothing is padded
     * @param sampleIds [B, T] int64, the packed sample each token belongs to (attention stays inside a sample), or null
     */
    public static NDArray forRows(NDManager manager, long batch, long length, NDArray paddingMask, NDArray sampleIds,
            Integer slidingWindow, DataType computeType) {
        NDArray indices = manager.arange(0, length, 1, DataType.INT64);
        NDArray allowed = causalWindow(indices, indices, slidingWindow).reshape(1, 1, length, length);
        if (paddingMask != null) {
            allowed = allowed.logicalAnd(paddingMask.toType(DataType.BOOLEAN, false).reshape(batch, 1, 1, length));
        }
        if (sampleIds != null) {
            NDArray sameSample = sampleIds.reshape(batch, 1, length, 1).eq(sampleIds.reshape(batch, 1, 1, length));
            allowed = allowed.logicalAnd(sameSample);
        }
        return toAdditive(manager, allowed.broadcast(batch, 1, length, length), computeType);
    }

    /**
     * For new tokens attending over a KV cache.
     *
     * @param queryIndices [Tq] sequence indices of the new tokens
     * @param keyIndices [K] sequence index held in each key slot, -1 for an empty slot
     */
    public static NDArray forCache(NDManager manager, long[] queryIndices, long[] keyIndices, Integer slidingWindow,
            DataType computeType) {
        NDArray queries = manager.create(queryIndices);
        NDArray keys = manager.create(keyIndices);
        NDArray allowed = causalWindow(queries, keys, slidingWindow).logicalAnd(keys.gte(0).reshape(1, keyIndices.length));
        return toAdditive(manager, allowed.reshape(1, 1, queryIndices.length, keyIndices.length), computeType);
    }

    /** [Tq, K] boolean: key index <= query index, and inside the window when there is one. */
    private static NDArray causalWindow(NDArray queryIndices, NDArray keyIndices, Integer slidingWindow) {
        NDArray q = queryIndices.reshape(-1, 1);
        NDArray k = keyIndices.reshape(1, -1);
        NDArray allowed = k.lte(q);
        if (slidingWindow != null) {
            allowed = allowed.logicalAnd(k.gt(q.sub(slidingWindow)));
        }
        return allowed;
    }

    private static NDArray toAdditive(NDManager manager, NDArray allowed, DataType computeType) {
        float lowest = computeType == DataType.FLOAT16 ? -65504f : -Float.MAX_VALUE;
        return allowed.logicalNot().toType(computeType, false).mul(lowest);
    }
}
