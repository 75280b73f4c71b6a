package io.mixtune.trainer.run;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;

/**
 * An endless stream of micro-batches over a fixed list of items (preference pairs), epoch after epoch, each epoch a
 * shuffle seeded by {@code seed + epoch} (TRL samples pairs at random too): micro-batch i is the items at
 * {@link #microBatch}(i). One epoch's order is kept at a time, which is all a run reads.
 */
public final class ShuffledEpochs {
    private final int items;
    private final int microBatchSize;
    private final long seed;
    private long cachedEpoch = -1;
    private int[] cachedOrder;

    /** @param seed the epoch's shuffle draws from new Random(seed + epoch) */
    public ShuffledEpochs(int items, int microBatchSize, long seed) {
        this.items = items;
        this.microBatchSize = microBatchSize;
        this.seed = seed;
    }

    public long microBatchesPerEpoch() {
        return microBatchesPerEpoch(items, microBatchSize);
    }

    public static long microBatchesPerEpoch(int items, int microBatchSize) {
        return (items + microBatchSize - 1) / microBatchSize;
    }

    /** The items in order, in micro-batches of {@code microBatchSize} (the last may hold fewer). */
    public static List<int[]> inOrder(int items, int microBatchSize) {
        List<int[]> batches = new ArrayList<>();
        for (int from = 0; from < items; from += microBatchSize) {
            int first = from;
            int[] indices = new int[Math.min(microBatchSize, items - from)];
            Arrays.setAll(indices, i -> first + i);
            batches.add(indices);
        }
        return batches;
    }

    /** The item indices of micro-batch {@code index} (the last of an epoch may hold fewer). */
    public int[] microBatch(long index) {
        long perEpoch = microBatchesPerEpoch();
        int[] order = epochOrder(index / perEpoch);
        int from = (int) (index % perEpoch) * microBatchSize;
        return Arrays.copyOfRange(order, from, Math.min(order.length, from + microBatchSize));
    }

    private int[] epochOrder(long epoch) {
        if (epoch != cachedEpoch) {
            List<Integer> order = new ArrayList<>();
            for (int i = 0; i < items; i++) {
                order.add(i);
            }
            Collections.shuffle(order, new Random(seed + epoch));
            cachedOrder = order.stream().mapToInt(Integer::intValue).toArray();
            cachedEpoch = epoch;
        }
        return cachedOrder;
    }
}
