package io.mixtune.trainer.run;

import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.IntFunction;

/**
 * An objective's micro-batches epoch by epoch, each epoch built once (its order a function of the seed and the epoch
 * number) and kept while the loop may still read it: the current one and the one before, so memory stays flat.
 *
 * @param <B> the micro-batch
 */
public final class EpochCache<B> {
    private final IntFunction<List<B>> build;
    private final Map<Integer, List<B>> epochs = new HashMap<>();

    /** @param build the micro-batches of an epoch, by its number */
    public EpochCache(IntFunction<List<B>> build) {
        this.build = build;
    }

    public List<B> epoch(int epoch) {
        List<B> cached = epochs.get(epoch);
        if (cached != null) {
            return cached;
        }
        List<B> batches = build.apply(epoch);
        epochs.keySet().removeIf(k -> k < epoch - 1); // keep memory flat over long runs
        epochs.put(epoch, batches);
        return batches;
    }
}
