package io.mixtune.data.batch;

import io.mixtune.data.template.TokenizedSample;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * How samples become rows of a fixed length: TRL 1.13's SFTConfig.packing_strategy, by its names.
 *
 * <ul>
 *   <li>{@code bfd}: TRL's {@code _pack_bfd(on_seq_length_overflow="truncate")}: whole samples, one longer than a row
 *       cut keeping its start (mixtune's samples are cut before, a chat at whole exchanges), packed best-fit
 *       decreasing as bfd_split's pieces are, each its own sequence. Until 2026-12-08 mixtune packed bfd first-fit
 *       decreasing ({@link #BFD_FIRST_FIT}), which runs recorded then resume with.
 *   <li>{@code bfd_split}: TRL's {@code _pack_bfd(on_seq_length_overflow="split")}: a sample longer than a row becomes
 *       chunks of a row's length, the last one what is left; the chunks are packed best-fit decreasing as TRL packs
 *       them, each its own sequence (positions restart, its first token unlabeled, attention inside it).
 *   <li>{@code wrapped}: TRL's {@code _pack_wrapped}: the samples end to end, cut every row length; a row is one
 *       sequence (positions 0, 1, ... across the row, attention across the samples in it, every label kept), as TRL
 *       collates it without padding-free (its default for wrapped).
 * </ul>
 *
 * <p>TRL packs with {@code datasets.map(batched=True)} and its default of {@value #TRL_MAP_BATCH} examples a batch, so
 * each run of that many samples is packed on its own: equal rows on any number of samples.
 */
public enum PackingStrategy {
    BFD("bfd"), BFD_SPLIT("bfd_split"), WRAPPED("wrapped"),
    /**
     * mixtune's bfd before 2026-12-08: first-fit decreasing over all the samples at once ({@link SamplePacker}), which
     * a run recorded then resumes with (data.packing_fit first_fit); its key is bfd's.
     */
    BFD_FIRST_FIT("bfd");

    /** datasets' Dataset.map batch_size default, which SFTTrainer._prepare_dataset's pack_dataset call keeps. */
    static final int TRL_MAP_BATCH = 1000;

    public static final List<String> KEYS = Arrays.stream(values()).map(PackingStrategy::key).distinct().toList();

    private final String key;

    PackingStrategy(String key) {
        this.key = key;
    }

    /** The name TRL and the recipe use. */
    public String key() {
        return key;
    }

    /** @throws IllegalArgumentException for a name that is none of {@link #KEYS} */
    public static PackingStrategy byKey(String key) {
        for (PackingStrategy strategy : values()) {
            if (strategy.key.equals(key)) {
                return strategy;
            }
        }
        if ("bfd-requeue".equals(key)) {
            // trl/trainer/sft_config.py SFTConfig.__post_init__ still maps it to bfd_split with a FutureWarning
            throw new IllegalArgumentException("bfd-requeue is TRL's old name of bfd_split (renamed in TRL 1.13, which "
                    + "still reads it with a warning): write bfd_split");
        }
        throw new IllegalArgumentException("expected one of " + String.join(", ", KEYS) + ", got \"" + key + "\"");
    }

    /** What a row's labels and positions are, for people reading a dump of the rows. */
    public String rowLegend() {
        return this == WRAPPED ? "one sequence a row: positions 0, 1, ... across it, every label kept"
                : "positions restart at each sequence, whose first token is untrained";
    }

    /** Whether samples are cut to a row's length before packing; the others keep every token. */
    public boolean truncates() {
        return this == BFD || this == BFD_FIRST_FIT;
    }

    /** The samples packed into rows of {@code rowLength}, padded with {@code padId}, in TRL's row order. */
    public List<PackedRow> pack(List<TokenizedSample> samples, int rowLength, long padId) {
        SamplePacker packer = new SamplePacker(rowLength, padId);
        if (this == BFD_FIRST_FIT) {
            return packer.pack(samples);
        }
        List<PackedRow> rows = new ArrayList<>();
        for (int start = 0; start < samples.size(); start += TRL_MAP_BATCH) {
            List<TokenizedSample> batch = samples.subList(start, Math.min(samples.size(), start + TRL_MAP_BATCH));
            if (this != WRAPPED) {
                for (List<TokenizedSample> bin : bestFitDecreasing(pieces(batch, rowLength), rowLength)) {
                    rows.add(packer.row(bin));
                }
            } else {
                rows.addAll(wrapped(batch, rowLength, padId));
            }
        }
        return rows;
    }

    /** How many rows {@link #pack} makes, without building them. */
    public int rowCount(List<TokenizedSample> samples, int rowLength) {
        if (this == BFD_FIRST_FIT) {
            return new SamplePacker(rowLength, 0).assign(samples).size();
        }
        int rows = 0;
        for (int start = 0; start < samples.size(); start += TRL_MAP_BATCH) {
            List<TokenizedSample> batch = samples.subList(start, Math.min(samples.size(), start + TRL_MAP_BATCH));
            long tokens = batch.stream().mapToLong(TokenizedSample::length).sum();
            rows += this != WRAPPED ? bestFitDecreasing(pieces(batch, rowLength), rowLength).size()
                    : (int) ((tokens + rowLength - 1) / rowLength);
        }
        return rows;
    }

    /** What _pack_bfd bins: bfd's samples cut to a row keeping their start (pc.list_slice), bfd_split's chunks. */
    private List<TokenizedSample> pieces(List<TokenizedSample> samples, int rowLength) {
        if (this == BFD_SPLIT) {
            return chunks(samples, rowLength);
        }
        List<TokenizedSample> cut = new ArrayList<>(samples.size());
        for (TokenizedSample sample : samples) {
            cut.add(sample.length() <= rowLength ? sample : new TokenizedSample(
                    Arrays.copyOf(sample.inputIds(), rowLength), Arrays.copyOf(sample.labels(), rowLength),
                    sample.source()));
        }
        return cut;
    }

    /**
     * Each sample cut into pieces of {@code rowLength}, the last one the rest, in sample order (TRL's split offsets:
     * k x seq_length, shifted left by what the last fragment lacks).
     */
    static List<TokenizedSample> chunks(List<TokenizedSample> samples, int rowLength) {
        List<TokenizedSample> chunks = new ArrayList<>();
        for (TokenizedSample sample : samples) {
            if (sample.length() <= rowLength) {
                chunks.add(sample);
                continue;
            }
            for (int from = 0; from < sample.length(); from += rowLength) {
                int to = Math.min(sample.length(), from + rowLength);
                chunks.add(new TokenizedSample(Arrays.copyOfRange(sample.inputIds(), from, to),
                        Arrays.copyOfRange(sample.labels(), from, to), sample.source()));
            }
        }
        return chunks;
    }

    /**
     * TRL's best fit decreasing (its _SegmentTree search): longest first, ties in their order (Arrow's stable sort),
     * each into the row whose free space is the smallest that holds it, among rows with equal space the one that
     * came to it first (its deque per space), else a new row. Rows in the order they were opened.
     */
    private static List<List<TokenizedSample>> bestFitDecreasing(List<TokenizedSample> chunks, int rowLength) {
        Integer[] order = new Integer[chunks.size()];
        for (int i = 0; i < order.length; i++) {
            order[i] = i;
        }
        Arrays.sort(order, Comparator.comparingInt((Integer i) -> chunks.get(i).length()).reversed());
        List<List<TokenizedSample>> bins = new ArrayList<>();
        TreeMap<Integer, ArrayDeque<Integer>> binsBySpace = new TreeMap<>(); // free space > 0 -> bin indices
        int[] free = new int[chunks.size()];
        for (int index : order) {
            int length = chunks.get(index).length();
            if (length == 0) {
                continue; // TRL filters empty sequences out first
            }
            Map.Entry<Integer, ArrayDeque<Integer>> fit = binsBySpace.ceilingEntry(length);
            int bin;
            if (fit == null) {
                bin = bins.size();
                bins.add(new ArrayList<>());
                free[bin] = rowLength;
            } else {
                bin = fit.getValue().pollFirst();
                if (fit.getValue().isEmpty()) {
                    binsBySpace.remove(fit.getKey());
                }
            }
            bins.get(bin).add(chunks.get(index));
            free[bin] -= length;
            if (free[bin] > 0) {
                binsBySpace.computeIfAbsent(free[bin], k -> new ArrayDeque<>()).addLast(bin);
            }
        }
        return bins;
    }

    /** The samples' ids and labels end to end, cut every {@code rowLength}; the last row holds the rest. */
    private static List<PackedRow> wrapped(List<TokenizedSample> samples, int rowLength, long padId) {
        long total = samples.stream().mapToLong(TokenizedSample::length).sum();
        List<PackedRow> rows = new ArrayList<>();
        long[] ids = null;
        long[] labels = null;
        int at = rowLength;
        for (TokenizedSample sample : samples) {
            for (int t = 0; t < sample.length(); t++) {
                if (at == rowLength) {
                    ids = new long[rowLength];
                    labels = new long[rowLength];
                    rows.add(oneSequence(ids, labels, (int) Math.min(rowLength, total), padId));
                    total -= rowLength;
                    at = 0;
                }
                ids[at] = sample.inputIds()[t];
                labels[at] = sample.labels()[t];
                at++;
            }
        }
        return rows;
    }

    /**
     * A row whose first {@code real} tokens are one sequence: positions 0, 1, ... and one sample id, as TRL's collator
     * without padding-free gives (an all-ones attention mask, positions from 0). The arrays are filled in later.
     */
    private static PackedRow oneSequence(long[] ids, long[] labels, int real, long padId) {
        long[] positions = new long[ids.length];
        long[] sampleIds = new long[ids.length];
        Arrays.fill(ids, real, ids.length, padId);
        Arrays.fill(labels, real, labels.length, TokenizedSample.IGNORE);
        Arrays.fill(sampleIds, real, sampleIds.length, -1);
        for (int t = 0; t < real; t++) {
            positions[t] = t;
        }
        return new PackedRow(ids, labels, positions, sampleIds, real);
    }
}
