package io.mixtune.merging.gguf;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * An importance matrix as llama.cpp's llama-quantize reads it (tools/quantize/quantize.cpp load_imatrix on
 * common/imatrix-loader.cpp's common_imatrix_load): the GGUF file current llama-imatrix writes ({@code
 * <tensor>.in_sum2} and {@code <tensor>.counts} F32 tensors, imatrix.datasets / chunk_count / chunk_size, all three
 * required), or, when the file is not GGUF, the legacy .dat file (int32 entries; per entry int32 name length, name,
 * int32 ncall, int32 nval, nval float32 sums; then optionally int32 chunks and a dataset name). The weights of a
 * tensor's column are sums / count: a GGUF file's counts per expert (a 3-D {@code ffn_*_exps} entry holds ne0 sums
 * per expert; a count of 0 gives weights 1), a legacy file's ncall (0: the sums as they are).
 *
 * @param weights per llama.cpp tensor name, ne0 weights (ne0 * experts for a 3-D tensor)
 * @param datasets the datasets it was computed on (may be empty)
 * @param chunkCount imatrix.chunk_count, or the legacy file's trailing chunk count (0 when absent)
 */
public record ImportanceMatrix(Path file, Map<String, float[]> weights, List<String> datasets, int chunkCount) {

    /**
     * @throws IllegalArgumentException naming the file, for what llama-quantize refuses ("failed to load imatrix",
     *     "missing imatrix metadata", "imatrix contains non-finite value")
     */
    public static ImportanceMatrix read(Path file) {
        Stored stored = readStored(file, "--imatrix");
        Map<String, float[]> weights = new TreeMap<>();
        stored.sums().forEach((name, sums) -> {
            long[] counts = stored.counts().get(name);
            float[] values = new float[sums.length];
            int ne0 = sums.length / counts.length;
            for (int j = 0; j < counts.length; j++) {
                // load_imatrix divides by the (rounded) count as float; a legacy file's ncall 0 leaves the sums
                float count = (float) counts[j];
                for (int i = 0; i < ne0; i++) {
                    float sum = sums[j * ne0 + i];
                    values[j * ne0 + i] = count > 0 ? sum / count : stored.legacy() ? sum : 1;
                }
            }
            weights.put(name, values);
        });
        ImportanceMatrix matrix = new ImportanceMatrix(file, weights, stored.datasets(), stored.chunkCount());
        // llama_model_quantize_impl: "imatrix contains non-finite value"
        matrix.weights().forEach((name, values) -> {
            for (float value : values) {
                if (!Float.isFinite(value)) {
                    throw new IllegalArgumentException("--imatrix " + file + ": " + name + " has the weight " + value
                            + "; llama-quantize refuses an imatrix with a non-finite value");
                }
            }
        });
        return matrix;
    }

    /**
     * An imatrix file's entries as stored (common_imatrix_load): a GGUF file's in_sum2 and counts (each count rounded
     * as std::lround), or a legacy file's values (sums / count x ncall) with {ncall} as the counts.
     */
    record Stored(boolean legacy, Map<String, float[]> sums, Map<String, long[]> counts, List<String> datasets,
            int chunkCount) {}

    /** @param option the option that named the file, for the errors (--imatrix, --in-file) */
    static Stored readStored(Path file, String option) {
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (java.nio.file.NoSuchFileException e) {
            throw new IllegalArgumentException(option + " " + file + " does not exist; expected the importance matrix"
                    + " llama-imatrix wrote (GGUF, or the legacy .dat)", e);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + option + " " + file + ": " + e.getMessage(), e);
        }
        return bytes.length >= 4 && ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).getInt() == GgufWriter.MAGIC
                ? gguf(file, option) : legacy(file, bytes, option);
    }

    private static Stored gguf(Path file, String option) {
        GgufReader reader;
        try {
            reader = GgufReader.open(file);
        } catch (IOException | RuntimeException e) {
            throw new IllegalArgumentException(option + " " + file + " is not a GGUF file llama-quantize loads: " + e
                    .getMessage(), e);
        }
        if (reader.tensors().isEmpty()) {
            throw new IllegalArgumentException(option + " " + file + " holds no data (no tensors)");
        }
        Map<String, GgufReader.Value> metadata = reader.metadata();
        if (!metadata.containsKey("imatrix.datasets") || !metadata.containsKey("imatrix.chunk_count")
                || !metadata.containsKey("imatrix.chunk_size")) {
            throw new IllegalArgumentException(option + " " + file + " lacks imatrix.datasets, imatrix.chunk_count or"
                    + " imatrix.chunk_size; llama-quantize refuses it (\"missing imatrix metadata\")");
        }
        List<String> datasets = new ArrayList<>();
        if (metadata.get("imatrix.datasets").value() instanceof List<?> list
                && metadata.get("imatrix.datasets").type().equals("ARRAY[STRING]")) {
            list.forEach(dataset -> datasets.add((String) dataset));
        }
        int chunkCount = ((Number) metadata.get("imatrix.chunk_count").value()).intValue();
        Map<String, String[]> pairs = new TreeMap<>();
        for (String name : reader.tensors().keySet()) {
            if (name.endsWith(".in_sum2")) {
                pairs.computeIfAbsent(name.substring(0, name.length() - 8), n -> new String[2])[0] = name;
            } else if (name.endsWith(".counts")) {
                pairs.computeIfAbsent(name.substring(0, name.length() - 7), n -> new String[2])[1] = name;
            }
        }
        Map<String, float[]> sums = new TreeMap<>();
        Map<String, long[]> counts = new TreeMap<>();
        for (Map.Entry<String, String[]> pair : pairs.entrySet()) {
            if (pair.getValue()[0] == null || pair.getValue()[1] == null) {
                throw new IllegalArgumentException(option + " " + file + ": " + pair.getKey() + " has in_sum2 without"
                        + " counts or counts without in_sum2 (llama-quantize: \"mismatched sums and counts\")");
            }
            float[] entrySums = reader.floats(pair.getValue()[0]);
            float[] entryCounts = reader.floats(pair.getValue()[1]);
            if (entryCounts.length == 0 || entrySums.length % entryCounts.length != 0) {
                throw new IllegalArgumentException(option + " " + file + ": " + pair.getKey() + " has "
                        + entrySums.length + " sums for " + entryCounts.length + " counts");
            }
            long[] rounded = new long[entryCounts.length];
            for (int j = 0; j < rounded.length; j++) {
                rounded[j] = Math.round((double) entryCounts[j]); // common_imatrix_load's std::lround
            }
            sums.put(pair.getKey(), entrySums);
            counts.put(pair.getKey(), rounded);
        }
        return new Stored(false, sums, counts, datasets, chunkCount);
    }

    private static Stored legacy(Path file, byte[] bytes, String option) {
        ByteBuffer in = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        String problem = option + " " + file + " is neither a GGUF imatrix nor a legacy .dat one llama-quantize loads";
        try {
            int entries = in.getInt();
            if (entries < 1) {
                throw new IllegalArgumentException(problem + ": no data (" + entries + " entries)");
            }
            Map<String, float[]> sums = new TreeMap<>();
            Map<String, long[]> counts = new TreeMap<>();
            for (int e = 0; e < entries; e++) {
                int length = in.getInt();
                if (length < 0 || length > in.remaining()) {
                    throw new IllegalArgumentException(problem + ": entry " + (e + 1) + "'s name is cut short");
                }
                byte[] name = new byte[length];
                in.get(name);
                int ncall = in.getInt();
                int nval = in.getInt();
                if (nval < 1 || (long) nval * 4 > in.remaining()) {
                    throw new IllegalArgumentException(problem + ": entry " + (e + 1) + " has " + nval + " values"
                            + " or is cut short");
                }
                float[] values = new float[nval];
                for (int i = 0; i < nval; i++) {
                    values[i] = in.getFloat();
                }
                // the C string stops at a NUL, as std::string{data()} does
                String text = new String(name, StandardCharsets.UTF_8);
                int nul = text.indexOf('\0');
                sums.put(nul >= 0 ? text.substring(0, nul) : text, values);
                counts.put(nul >= 0 ? text.substring(0, nul) : text, new long[] {ncall});
            }
            int chunkCount = 0;
            List<String> datasets = new ArrayList<>();
            if (in.remaining() >= 4) {
                chunkCount = in.getInt();
                if (in.remaining() >= 4) {
                    int length = in.getInt();
                    if (length > 0 && length <= in.remaining()) {
                        byte[] dataset = new byte[length];
                        in.get(dataset);
                        String text = new String(dataset, StandardCharsets.UTF_8);
                        int nul = text.indexOf('\0');
                        datasets.add(nul >= 0 ? text.substring(0, nul) : text);
                    }
                }
            }
            return new Stored(true, sums, counts, datasets, chunkCount);
        } catch (java.nio.BufferUnderflowException e) {
            throw new IllegalArgumentException(problem + ": cut short", e);
        }
    }
}
