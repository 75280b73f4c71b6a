package io.mixtune.merging.gguf;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * What llama-imatrix collects (tools/imatrix/imatrix.cpp, IMatrixCollector): per weight matrix (llama.cpp's tensor
 * name) the sums over its input rows of each column's squared activation, and how many rows were summed: one count for
 * a dense matrix, one per expert for a stacked {@code ffn_*_exps} matrix (mul_mat_id's rows, per chosen expert). It is
 * written as llama-imatrix's GGUF file (save_imatrix) or legacy .dat (save_imatrix_legacy), and earlier files are
 * added in as its --in-file does (load_imatrix).
 */
public final class ImatrixStats {
    /** sums: ne0 per matrix (matrices = counts.length); counts: rows summed per matrix. */
    private record Entry(float[] sums, long[] counts) {}

    /** Sorted as std::sort sorts std::string (the names are ASCII): both files list the entries in this order. */
    private final Map<String, Entry> entries = new TreeMap<>();
    private final List<String> datasets = new ArrayList<>();
    private final int chunkSize;

    /** @param chunkSize llama-imatrix's n_ctx / n_parallel: the tokens of one chunk (-c) */
    public ImatrixStats(int chunkSize) {
        if (chunkSize < 1) {
            throw new IllegalArgumentException("chunk size " + chunkSize + " is under 1");
        }
        this.chunkSize = chunkSize;
    }

    public int chunkSize() {
        return chunkSize;
    }

    /** Adds rows' column sums of squares to a dense matrix (collect_imatrix's GGML_OP_MUL_MAT branch). */
    public void addDense(String name, float[] sumsOfSquares, long rows) {
        Entry entry = entries.computeIfAbsent(name, n -> new Entry(new float[sumsOfSquares.length], new long[1]));
        long[] counts = entry.counts();
        if (counts.length > 1 && Arrays.stream(counts).allMatch(c -> c == counts[0])) {
            // "use a single count per dense tensor (necessary when merging older GGUF-imatrix files with 3d tensors)"
            entry = new Entry(entry.sums(), new long[] {counts[0]});
            entries.put(name, entry);
        }
        requireColumns(name, entry, sumsOfSquares.length, 1);
        add(entry.sums(), 0, sumsOfSquares);
        for (int i = 0; i < entry.counts().length; i++) {
            entry.counts()[i] += rows;
        }
        requireFinite(name, entry.sums());
    }

    /** Adds the rows routed to {@code expert} (of {@code experts}) to a stacked expert matrix (GGML_OP_MUL_MAT_ID). */
    public void addExpert(String name, int expert, int experts, float[] sumsOfSquares, long rows) {
        Entry entry = entries.computeIfAbsent(name, n -> new Entry(new float[sumsOfSquares.length * experts],
                new long[experts]));
        if (entry.counts().length == 1 && experts > 1) {
            long[] broadcast = new long[experts]; // "broadcast, when loading an old imatrix"
            Arrays.fill(broadcast, entry.counts()[0]);
            entry = new Entry(entry.sums(), broadcast);
            entries.put(name, entry);
        }
        requireColumns(name, entry, sumsOfSquares.length, experts);
        add(entry.sums(), expert * sumsOfSquares.length, sumsOfSquares);
        entry.counts()[expert] += rows;
        requireFinite(name, entry.sums());
    }

    /** An entry was collected at all (llama-imatrix lists only matrices its callback saw). */
    public boolean has(String name) {
        return entries.containsKey(name);
    }

    public List<String> names() {
        return List.copyOf(entries.keySet());
    }

    public float[] sums(String name) {
        return entries.get(name).sums().clone();
    }

    public long[] counts(String name) {
        return entries.get(name).counts().clone();
    }

    public List<String> datasets() {
        return List.copyOf(datasets);
    }

    /**
     * imatrix.chunk_count: m_last_chunk, which collect_imatrix raises to count / chunk size whenever a count passes it
     * and load_imatrix sets to the largest count / chunk size; both are the largest count / chunk size at the end.
     */
    public int chunkCount() {
        return (int) (largestCount() / chunkSize);
    }

    /** The most rows any matrix (or expert) has summed. */
    long largestCount() {
        long most = 0;
        for (Entry entry : entries.values()) {
            for (long count : entry.counts()) {
                most = Math.max(most, count);
            }
        }
        return most;
    }

    private static void add(float[] into, int from, float[] values) {
        for (int j = 0; j < values.length; j++) {
            into[from + j] += values[j];
        }
    }

    private static void requireColumns(String name, Entry entry, int columns, int matrices) {
        if (entry.sums().length != (long) columns * matrices || entry.counts().length != matrices) {
            throw new IllegalArgumentException(name + ": " + columns + " columns x " + matrices + " matrices do not"
                    + " fit the " + entry.sums().length + " sums and " + entry.counts().length + " counts held"
                    + " (llama-imatrix: \"inconsistent size\")");
        }
    }

    private static void requireFinite(String name, float[] sums) {
        for (float sum : sums) {
            if (!Float.isFinite(sum)) {
                // collect_imatrix: "%f detected in %s", exit(1)
                throw new IllegalStateException(sum + " detected in " + name + "; llama-imatrix stops here too");
            }
        }
    }

    /**
     * llama-imatrix's --in-file: adds the sums and counts of an earlier file (load_imatrix on common_imatrix_load;
     * read by {@link ImportanceMatrix#readStored}, which refuses what common_imatrix_load refuses). A
     * GGUF file's sums and counts add as they are (each count rounded to an integer, a single count broadcast over the
     * experts); a legacy file's values, which are sums / count * ncall, add times the chunk size, and its ncall times
     * the chunk size to the counts. Its datasets come before this run's.
     */
    public void load(Path file) {
        ImportanceMatrix.Stored stored = ImportanceMatrix.readStored(file, "--in-file");
        for (Map.Entry<String, float[]> loaded : stored.sums().entrySet()) {
            String name = loaded.getKey();
            float[] sums = loaded.getValue();
            long[] counts = stored.counts().get(name);
            Entry held = entries.get(name);
            if (stored.legacy()) {
                // "Legacy format: sums contain (raw_sum/raw_count)*ncall, counts contain {ncall}; reconstruct raw
                // form by multiplying by chunk_size"
                if (held == null) {
                    held = new Entry(new float[sums.length], new long[1]);
                    entries.put(name, held);
                }
                if (held.sums().length != sums.length) {
                    throw new IllegalArgumentException("--in-file " + file + ": " + name + " has " + sums.length
                            + " values where earlier files have " + held.sums().length);
                }
                for (int j = 0; j < sums.length; j++) {
                    held.sums()[j] += sums[j] * chunkSize;
                }
                for (int j = 0; j < held.counts().length; j++) {
                    held.counts()[j] += counts[0] * chunkSize;
                }
                continue;
            }
            if (held == null) {
                entries.put(name, new Entry(sums.clone(), counts.clone()));
                continue;
            }
            if (held.sums().length != sums.length) {
                throw new IllegalArgumentException("--in-file " + file + ": " + name + " has " + sums.length
                        + " sums where earlier files have " + held.sums().length + " (llama-imatrix: \"mismatched"
                        + " sums size\")");
            }
            long[] into = held.counts();
            if (into.length == 1 && counts.length > 1) {
                into = new long[counts.length];
                Arrays.fill(into, held.counts()[0]);
            } else if (into.length != counts.length) {
                throw new IllegalArgumentException("--in-file " + file + ": " + name + " has " + counts.length
                        + " counts where earlier files have " + into.length + " (llama-imatrix: \"mismatched counts"
                        + " size\")");
            }
            add(held.sums(), 0, sums);
            for (int j = 0; j < counts.length; j++) {
                into[j] += counts[j];
            }
            entries.put(name, new Entry(held.sums(), into));
        }
        datasets.addAll(stored.datasets());
    }

    /**
     * save_imatrix: general.type "imatrix", imatrix.datasets (the loaded files' then {@code promptFile}, when given),
     * imatrix.chunk_count and imatrix.chunk_size, then per entry (sorted) {@code <name>.in_sum2} F32 [ne0, matrices]
     * and {@code <name>.counts} F32 [1, matrices]; entries with partial data are written (the reader corrects them).
     */
    public void writeGguf(Path out, String promptFile) {
        GgufWriter writer = new GgufWriter();
        writer.putString("general.type", "imatrix");
        List<String> names = new ArrayList<>(datasets);
        if (promptFile != null && !promptFile.isEmpty()) {
            names.add(promptFile);
        }
        writer.putStrings("imatrix.datasets", names);
        writer.putUint32("imatrix.chunk_count", chunkCount());
        writer.putUint32("imatrix.chunk_size", chunkSize);
        for (Map.Entry<String, Entry> e : entries.entrySet()) {
            float[] sums = e.getValue().sums();
            long[] counts = e.getValue().counts();
            float[] countValues = new float[counts.length];
            for (int j = 0; j < counts.length; j++) {
                countValues[j] = (float) counts[j];
            }
            // ggml_new_tensor_2d [ne0, matrices] and [1, matrices]; GGUF stores ggml_n_dims, which drops a trailing 1
            boolean one = counts.length == 1;
            writer.addTensor(e.getKey() + ".in_sum2", one ? new long[] {sums.length}
                    : new long[] {counts.length, sums.length / counts.length}, GgmlType.F32,
                    sink -> sink.accept(sums.clone()));
            writer.addTensor(e.getKey() + ".counts", one ? new long[] {1} : new long[] {counts.length, 1},
                    GgmlType.F32, sink -> sink.accept(countValues));
        }
        try {
            StagedGgufFile.write(writer, out);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + out + ": " + e.getMessage(), e);
        }
    }

    /**
     * save_imatrix_legacy: the entries with some data (an entry whose counts are all 0 is left out), sorted; per entry
     * its name, ncall = ceil(largest count / chunk size), and each value as sum / count * ncall (a matrix with count 0
     * gives ncall: "store 1 for partial data"); then the chunk count and the dataset (the prompt file, else the last
     * loaded file's dataset).
     */
    public void writeLegacy(Path out, String promptFile) {
        List<String> stored = new ArrayList<>();
        long size = 4 + 4 + 4;
        for (Map.Entry<String, Entry> e : entries.entrySet()) {
            if (Arrays.stream(e.getValue().counts()).anyMatch(c -> c != 0)) {
                stored.add(e.getKey());
                size += 12 + e.getKey().getBytes(StandardCharsets.UTF_8).length + 4L * e.getValue().sums().length;
            }
        }
        String dataset = promptFile != null && !promptFile.isEmpty() ? promptFile
                : datasets.isEmpty() ? "" : datasets.get(datasets.size() - 1);
        byte[] datasetBytes = dataset.getBytes(StandardCharsets.UTF_8);
        ByteBuffer buffer = ByteBuffer.allocate(Math.toIntExact(size + datasetBytes.length))
                .order(ByteOrder.LITTLE_ENDIAN);
        buffer.putInt(stored.size());
        for (String name : stored) {
            Entry entry = entries.get(name);
            byte[] nameBytes = name.getBytes(StandardCharsets.UTF_8);
            buffer.putInt(nameBytes.length).put(nameBytes);
            long most = Arrays.stream(entry.counts()).max().orElse(0);
            int ncall = (int) ((most + chunkSize - 1) / chunkSize); // "ceiling division to avoid accidental zeros"
            buffer.putInt(ncall).putInt(entry.sums().length);
            int columns = entry.sums().length / entry.counts().length;
            for (int i = 0; i < entry.sums().length; i++) {
                float count = (float) entry.counts()[i / columns];
                float value = entry.sums()[i];
                if (count == 0.0f) {
                    value = 1.0f;
                    count = 1.0f;
                }
                buffer.putFloat((value / count) * (float) ncall);
            }
        }
        buffer.putInt(chunkCount());
        buffer.putInt(datasetBytes.length).put(datasetBytes);
        try {
            Files.write(out, buffer.array());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + out + ": " + e.getMessage(), e);
        }
    }
}
