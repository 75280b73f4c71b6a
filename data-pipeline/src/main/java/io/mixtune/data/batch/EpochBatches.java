package io.mixtune.data.batch;

import io.mixtune.data.template.TokenizedSample;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.List;
import java.util.Random;

/** The batches of one epoch, in an order fixed by the seed and the epoch number, so an interrupted run resumes exactly. */
public final class EpochBatches {
    /** Length grouping sorts within windows of this many batches, keeping the order random across windows. */
    static final int GROUPING_WINDOW = 50;

    private EpochBatches() {}

    static Random random(long seed, int epoch) {
        return new Random(seed * 1_000_003L + epoch);
    }

    /** Packed rows of {@code rowLength} (bfd), shuffled and grouped {@code batchSize} rows to a batch. */
    public static List<List<PackedRow>> packed(List<TokenizedSample> samples, int rowLength, int batchSize, long padId,
            long seed, int epoch) {
        return packed(samples, PackingStrategy.BFD, rowLength, batchSize, padId, seed, epoch);
    }

    /** Rows of {@code rowLength} packed by {@code strategy}, shuffled and grouped {@code batchSize} rows to a batch. */
    public static List<List<PackedRow>> packed(List<TokenizedSample> samples, PackingStrategy strategy, int rowLength,
            int batchSize, long padId, long seed, int epoch) {
        List<PackedRow> rows = strategy.pack(samples, rowLength, padId);
        Collections.shuffle(rows, random(seed, epoch));
        List<List<PackedRow>> batches = new ArrayList<>();
        for (int start = 0; start < rows.size(); start += batchSize) {
            batches.add(rows.subList(start, Math.min(rows.size(), start + batchSize)));
        }
        return batches;
    }

    /**
     * Without packing: shuffled, then sorted by length within windows of {@value #GROUPING_WINDOW} batches so a batch
     * holds similar lengths and little padding, then the batches shuffled.
     */
    public static List<PaddedBatch> lengthGrouped(List<TokenizedSample> samples, int batchSize, long padId, long seed,
            int epoch) {
        Random random = random(seed, epoch);
        List<Integer> order = new ArrayList<>();
        for (int i = 0; i < samples.size(); i++) {
            order.add(i);
        }
        Collections.shuffle(order, random);
        int window = batchSize * GROUPING_WINDOW;
        for (int start = 0; start < order.size(); start += window) {
            order.subList(start, Math.min(order.size(), start + window))
                    .sort(Comparator.comparingInt((Integer i) -> samples.get(i).length()).reversed());
        }
        List<PaddedBatch> batches = new ArrayList<>();
        for (int start = 0; start < order.size(); start += batchSize) {
            List<TokenizedSample> members = new ArrayList<>();
            for (int i : order.subList(start, Math.min(order.size(), start + batchSize))) {
                members.add(samples.get(i));
            }
            batches.add(pad(members, padId));
        }
        Collections.shuffle(batches, random);
        return batches;
    }

    static PaddedBatch pad(List<TokenizedSample> members, long padId) {
        int length = members.stream().mapToInt(TokenizedSample::length).max().orElse(0);
        int rows = members.size();
        long[][] ids = new long[rows][length];
        long[][] labels = new long[rows][length];
        long[][] positions = new long[rows][length];
        long[][] mask = new long[rows][length];
        for (int r = 0; r < rows; r++) {
            TokenizedSample sample = members.get(r);
            Arrays.fill(ids[r], padId);
            Arrays.fill(labels[r], TokenizedSample.IGNORE);
            System.arraycopy(sample.inputIds(), 0, ids[r], 0, sample.length());
            System.arraycopy(sample.labels(), 0, labels[r], 0, sample.length());
            for (int t = 0; t < sample.length(); t++) {
                positions[r][t] = t;
                mask[r][t] = 1;
            }
        }
        return new PaddedBatch(ids, labels, positions, mask);
    }
}
