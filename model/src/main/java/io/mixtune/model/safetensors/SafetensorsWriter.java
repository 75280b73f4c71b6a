package io.mixtune.model.safetensors;

import com.fasterxml.jackson.core.util.DefaultIndenter;
import com.fasterxml.jackson.core.util.DefaultPrettyPrinter;
import com.fasterxml.jackson.core.util.Separators;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeMap;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/**
 * Writes safetensors checkpoints the way transformers' {@code save_pretrained(safe_serialization=True)} lays them
 * out, streaming one tensor at a time so that saving a model never holds more than its largest tensor in memory.
 *
 * <p>Files are written under temporary {@code .*.partial} names in the target directory, flushed to disk, and
 * renamed into place only when every one is complete; the index of a sharded checkpoint is renamed last. A crash
 * mid-save never leaves a file that looks complete but is not: the directory holds the previous checkpoint, the new
 * one, none, or (sharded saves only) an incomplete shard set without an index, which {@link SafetensorsReader} rejects
 * because the shard names announce more shards than are present. Leftover {@code .partial} files may be deleted.
 */
public final class SafetensorsWriter {
    /** Conversion buffer: big enough that writes are not syscall-bound, small next to any tensor worth streaming. */
    private static final int CHUNK_BYTES = 1 << 20;

    private static final Map<String, String> HEADER_METADATA = Map.of("format", "pt");

    private static final SecureRandom RANDOM = new SecureRandom();

    private SafetensorsWriter() {
    }

    /** One tensor to write: its name, the dtype to store it as, and its shape. */
    public record TensorSpec(String name, DType dtype, long[] shape) {
        public TensorSpec {
            Objects.requireNonNull(name, "name");
            Objects.requireNonNull(dtype, "dtype");
            if (name.isEmpty() || name.equals(SafetensorsHeader.METADATA_KEY)) {
                throw new IllegalArgumentException("tensor name must be non-empty and not "
                        + SafetensorsHeader.METADATA_KEY + ", got '" + name + "'");
            }
            shape = shape.clone();
            for (long dim : shape) {
                if (dim < 0) {
                    throw new IllegalArgumentException("tensor '" + name + "': negative dimension in "
                            + Arrays.toString(shape));
                }
            }
        }

        @Override
        public long[] shape() {
            return shape.clone();
        }

        public long numel() {
            long n = 1;
            for (long dim : shape) {
                n = Math.multiplyExact(n, dim);
            }
            return n;
        }

        public long byteLength() {
            return Math.multiplyExact(numel(), (long) dtype.byteSize());
        }

        @Override
        public boolean equals(Object other) {
            return other instanceof TensorSpec that && name.equals(that.name) && dtype == that.dtype
                    && Arrays.equals(shape, that.shape);
        }

        @Override
        public int hashCode() {
            return Objects.hash(name, dtype, Arrays.hashCode(shape));
        }

        @Override
        public String toString() {
            return "TensorSpec[" + name + " " + dtype + " " + Arrays.toString(shape) + "]";
        }
    }

    /**
     * Supplies one tensor's data when the writer reaches it, so the caller can compute or copy it off the GPU just
     * in time. The writer asks for {@link #bytes} first; where that gives null, F32, F16 and BF16 specs are asked for
     * {@link #floats} (float32, converted by the writer) and every other dtype for {@link #rawBytes}.
     */
    @FunctionalInterface
    public interface TensorSource {
        /** Row-major float32 values, exactly {@code spec.numel()} of them. */
        float[] floats(TensorSpec spec);

        /** Row-major little-endian bytes already in {@code spec.dtype()}, exactly {@code spec.byteLength()}. */
        default byte[] rawBytes(TensorSpec spec) {
            throw new UnsupportedOperationException("tensor '" + spec.name() + "' is " + spec.dtype()
                    + "; a TensorSource must implement rawBytes to write non-float dtypes");
        }

        /**
         * The tensor's bytes as stored ({@code spec.dtype()}, little-endian, exactly {@code spec.byteLength()}), or
         * null to be asked for floats or raw bytes instead. The writer reads the buffer before it asks for the next
         * tensor, so it may be a view of memory that is only valid until then ({@link ArrayTensors}).
         */
        default ByteBuffer bytes(TensorSpec spec) {
            return null;
        }
    }

    /**
     * Writes {@code specs} into {@code dir} as {@code model.safetensors}, or, when they do not fit in one shard of
     * {@code maxShardBytes} tensor bytes, as {@code model-0000i-of-0000K.safetensors} plus
     * {@code model.safetensors.index.json}. Tensors keep spec order; a tensor larger than the limit gets a shard of
     * its own; the limit counts tensor bytes, not headers, as transformers' {@code max_shard_size} does.
     * Files from an earlier save with those names ({@code model.safetensors}, {@code model-*-of-*}, the index) are
     * deleted or replaced once the new files are complete, so the directory holds exactly one checkpoint; other
     * files (an adapter, a config) are left alone.
     *
     * @return the written safetensors files, in shard order (the index, if any, is not listed)
     */
    public static List<Path> writeCheckpoint(Path dir, List<TensorSpec> specs, long maxShardBytes, TensorSource source) {
        if (maxShardBytes <= 0) {
            throw new IllegalArgumentException("maxShardBytes must be positive, got " + maxShardBytes);
        }
        requireUniqueNames(specs);
        List<List<TensorSpec>> shards = planShards(specs, maxShardBytes);
        List<Path> temporaries = new ArrayList<>();
        try {
            Files.createDirectories(dir);
            Map<Path, Path> finalNameOf = new LinkedHashMap<>();
            Map<String, String> weightMap = new TreeMap<>();
            long totalSize = 0;
            for (int i = 0; i < shards.size(); i++) {
                String name = shards.size() == 1
                        ? CheckpointFileNames.SINGLE_FILE
                        : CheckpointFileNames.shardFile(i + 1, shards.size());
                Path temporary = createTemporary(dir, name, temporaries);
                writeShard(temporary, dir.resolve(name), shards.get(i), source);
                finalNameOf.put(temporary, dir.resolve(name));
                for (TensorSpec spec : shards.get(i)) {
                    weightMap.put(spec.name(), name);
                    totalSize += spec.byteLength();
                }
            }
            if (shards.size() > 1) {
                Path temporary = createTemporary(dir, CheckpointFileNames.INDEX_FILE, temporaries);
                Files.write(temporary, indexJson(totalSize, weightMap));
                forceToDisk(temporary);
                finalNameOf.put(temporary, dir.resolve(CheckpointFileNames.INDEX_FILE));
            }
            // A single file replaces its predecessor by an atomic rename, so there is never a moment without one.
            // Shards are not renamed over same-named old shards: a crash halfway would leave a complete-looking
            // mix of old and new weights, so the old set goes first and the index of the new set comes last.
            Path replacedByRename = shards.size() == 1 ? dir.resolve(CheckpointFileNames.SINGLE_FILE) : null;
            deleteEarlierCheckpoint(dir, replacedByRename);
            for (Map.Entry<Path, Path> e : finalNameOf.entrySet()) {
                moveIntoPlace(e.getKey(), e.getValue());
            }
            temporaries.clear();
            forceToDisk(dir);
            return finalNameOf.values().stream()
                    .filter(CheckpointFileNames::isSafetensors)
                    .collect(Collectors.toUnmodifiableList());
        } catch (IOException e) {
            throw new UncheckedIOException("could not write checkpoint to " + dir + ": " + e.getMessage(), e);
        } finally {
            deleteQuietly(temporaries);
        }
    }

    /**
     * Writes one safetensors file at exactly {@code file} (for example an {@code adapter_model.safetensors}),
     * atomically: a temporary file in the same directory is renamed over it when complete.
     */
    public static void writeFile(Path file, List<TensorSpec> specs, TensorSource source) {
        requireUniqueNames(specs);
        List<Path> temporaries = new ArrayList<>();
        try {
            Path dir = file.toAbsolutePath().getParent();
            Files.createDirectories(dir);
            Path temporary = createTemporary(dir, file.getFileName().toString(), temporaries);
            writeShard(temporary, file, specs, source);
            moveIntoPlace(temporary, file);
            temporaries.clear();
            forceToDisk(dir);
        } catch (IOException e) {
            throw new UncheckedIOException("could not write " + file + ": " + e.getMessage(), e);
        } finally {
            deleteQuietly(temporaries);
        }
    }

    static List<List<TensorSpec>> planShards(List<TensorSpec> specs, long maxShardBytes) {
        List<List<TensorSpec>> shards = new ArrayList<>();
        List<TensorSpec> current = new ArrayList<>();
        long currentBytes = 0;
        for (TensorSpec spec : specs) {
            long bytes = spec.byteLength();
            if (!current.isEmpty() && currentBytes + bytes > maxShardBytes) {
                shards.add(current);
                current = new ArrayList<>();
                currentBytes = 0;
            }
            current.add(spec);
            currentBytes += bytes;
        }
        if (!current.isEmpty() || shards.isEmpty()) {
            shards.add(current);
        }
        return shards;
    }

    /** Header first (it is computed from the specs alone), then each tensor's bytes as the source hands them over. */
    private static void writeShard(Path temporary, Path reportedAs, List<TensorSpec> specs, TensorSource source)
            throws IOException {
        byte[] header = SafetensorsHeader.encode(specs, HEADER_METADATA);
        try (FileChannel out = FileChannel.open(temporary, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
            writeFully(out, ByteBuffer.wrap(header));
            ByteBuffer chunk = ByteBuffer.allocateDirect(CHUNK_BYTES).order(ByteOrder.LITTLE_ENDIAN);
            for (TensorSpec spec : specs) {
                ByteBuffer stored = source.bytes(spec);
                if (stored != null) {
                    if (stored.remaining() != spec.byteLength()) {
                        throw new IllegalArgumentException(reportedAs + ": tensor '" + spec.name() + "': source gave "
                                + stored.remaining() + " bytes, expected " + spec.byteLength() + " bytes of "
                                + spec.dtype() + " for shape " + Arrays.toString(spec.shape()));
                    }
                    writeFully(out, stored);
                } else if (spec.dtype().isFloat32Convertible()) {
                    writeFloats(out, chunk, spec, source.floats(spec), reportedAs);
                } else {
                    byte[] raw = source.rawBytes(spec);
                    if (raw == null || raw.length != spec.byteLength()) {
                        throw new IllegalArgumentException(reportedAs + ": tensor '" + spec.name() + "': source gave "
                                + (raw == null ? "null" : raw.length + " bytes") + ", expected " + spec.byteLength()
                                + " bytes of " + spec.dtype() + " for shape " + Arrays.toString(spec.shape()));
                    }
                    writeFully(out, ByteBuffer.wrap(raw));
                }
            }
            long expectedSize = header.length + specs.stream().mapToLong(TensorSpec::byteLength).sum();
            if (out.position() != expectedSize) {
                throw new IllegalStateException(reportedAs + ": wrote " + out.position() + " bytes, expected " + expectedSize);
            }
            out.force(true);
        }
    }

    private static void writeFloats(FileChannel out, ByteBuffer chunk, TensorSpec spec, float[] values, Path reportedAs)
            throws IOException {
        if (values == null || values.length != spec.numel()) {
            throw new IllegalArgumentException(reportedAs + ": tensor '" + spec.name() + "': source gave "
                    + (values == null ? "null" : values.length + " floats") + ", expected " + spec.numel()
                    + " for shape " + Arrays.toString(spec.shape()));
        }
        chunk.clear();
        for (float value : values) {
            if (chunk.remaining() < Float.BYTES) {
                chunk.flip();
                writeFully(out, chunk);
                chunk.clear();
            }
            switch (spec.dtype()) {
                case F32 -> chunk.putFloat(value);
                case F16 -> chunk.putShort(Float16.fromFloat(value));
                case BF16 -> chunk.putShort(BFloat16.fromFloat(value));
                default -> throw new AssertionError(spec.dtype());
            }
        }
        chunk.flip();
        writeFully(out, chunk);
    }

    /** transformers writes {@code json.dumps(index, indent=2, sort_keys=True)}; this matches it key for key. */
    private static byte[] indexJson(long totalSize, Map<String, String> sortedWeightMap) throws IOException {
        JsonMapper json = JsonMapper.builder().build();
        ObjectNode root = json.createObjectNode();
        root.putObject("metadata").put("total_size", totalSize);
        ObjectNode weightMap = root.putObject("weight_map");
        sortedWeightMap.forEach(weightMap::put);
        DefaultPrettyPrinter printer = new DefaultPrettyPrinter()
                .withSeparators(Separators.createDefaultInstance()
                        .withObjectFieldValueSpacing(Separators.Spacing.AFTER));
        printer.indentObjectsWith(new DefaultIndenter("  ", "\n"));
        return (json.writer(printer).writeValueAsString(root) + "\n").getBytes(StandardCharsets.UTF_8);
    }

    private static void requireUniqueNames(List<TensorSpec> specs) {
        Set<String> seen = new HashSet<>();
        for (TensorSpec spec : specs) {
            if (!seen.add(spec.name())) {
                throw new IllegalArgumentException("tensor '" + spec.name() + "' appears twice in the specs");
            }
        }
    }

    /**
     * Temporary names end in .partial, never .safetensors, so a reader listing the directory cannot pick them up.
     * Not {@code Files.createTempFile}: its owner-only permissions would stay on the checkpoint after the rename,
     * where a plain {@code createFile} gets the umask's, as files written by transformers do.
     */
    private static Path createTemporary(Path dir, String finalName, List<Path> temporaries) throws IOException {
        while (true) {
            Path temporary = dir.resolve("." + finalName + "." + Long.toHexString(RANDOM.nextLong()) + ".partial");
            try {
                Files.createFile(temporary);
                temporaries.add(temporary);
                return temporary;
            } catch (FileAlreadyExistsException taken) {
                // Another save into the same directory drew the same name; draw again.
            }
        }
    }

    private static void deleteEarlierCheckpoint(Path dir, Path replacedByRename) throws IOException {
        // The index goes first: without it a half-deleted old shard set is rejected rather than loaded.
        Files.deleteIfExists(dir.resolve(CheckpointFileNames.INDEX_FILE));
        List<Path> earlier;
        try (Stream<Path> listing = Files.list(dir)) {
            earlier = listing.filter(CheckpointFileNames::isWrittenByCheckpointSave)
                    .filter(file -> !file.equals(replacedByRename))
                    .collect(Collectors.toList());
        }
        for (Path file : earlier) {
            Files.deleteIfExists(file);
        }
    }

    private static void moveIntoPlace(Path temporary, Path target) throws IOException {
        try {
            Files.move(temporary, target, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(temporary, target, StandardCopyOption.REPLACE_EXISTING);
        }
    }

    /** fsync; directories too, so that the renames survive a power cut. Not every platform can open a directory. */
    private static void forceToDisk(Path path) {
        try (FileChannel channel = FileChannel.open(path, StandardOpenOption.READ)) {
            channel.force(true);
        } catch (IOException notSupported) {
            // Best effort: the data files themselves were forced before being renamed.
        }
    }

    private static void writeFully(FileChannel out, ByteBuffer bytes) throws IOException {
        while (bytes.hasRemaining()) {
            out.write(bytes);
        }
    }

    private static void deleteQuietly(List<Path> files) {
        for (Path file : files) {
            try {
                Files.deleteIfExists(file);
            } catch (IOException ignored) {
                // A leftover *.partial is harmless: no reader opens it.
            }
        }
    }
}
