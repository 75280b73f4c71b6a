package io.mixtune.model.safetensors;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.io.EOFException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.ShortBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/**
 * A safetensors checkpoint opened for reading: one file, or a Hugging Face model directory with one file or shards.
 *
 * <p>Opening reads and validates only the headers, so a 90 GB Mixtral costs a few kilobytes and milliseconds.
 * {@link #bytes} memory-maps one tensor when asked for (one {@code FileChannel.map} covers at most 2 GiB, while a
 * shard can be larger); {@link #readFloats} reads and widens without a mapping, so nothing of the file stays resident.
 *
 * <p>Everything wrong with the files on disk is reported as a {@link CheckpointException} naming the file and the
 * tensor. An I/O error that says nothing about the content (EIO, a failed mapping, an interrupted read) is an
 * {@link UncheckedIOException} naming them instead: the read failed, the file may well be sound. Pickle checkpoints
 * ({@code .bin}, {@code .pt}, ...) are refused, never parsed.
 *
 * <p>Thread-safe: {@link #bytes} and {@link #readFloats} may be called from several loader threads.
 */
public final class SafetensorsReader implements AutoCloseable {
    private static final JsonMapper JSON = JsonMapper.builder().build();
    private static final int MAX_ARRAY_LENGTH = Integer.MAX_VALUE - 8;
    /** Staging for {@link #readFloats}: one per loader thread, big enough that reads are not syscall-bound. */
    private static final ThreadLocal<ByteBuffer> READ_BUFFER =
            ThreadLocal.withInitial(() -> ByteBuffer.allocateDirect(1 << 22).order(ByteOrder.LITTLE_ENDIAN));

    private final Path checkpoint;
    private final Map<String, TensorInfo> tensors;
    private final Map<Path, FileChannel> channels;
    private final Map<String, String> metadata;
    private volatile boolean closed;

    private SafetensorsReader(Path checkpoint, Map<String, TensorInfo> tensors, Map<Path, FileChannel> channels,
                              Map<String, String> metadata) {
        this.checkpoint = checkpoint;
        this.tensors = Collections.unmodifiableMap(tensors);
        this.channels = Collections.unmodifiableMap(channels);
        this.metadata = Collections.unmodifiableMap(metadata);
    }

    /**
     * Opens a {@code .safetensors} file or a model directory. In a directory, {@code model.safetensors.index.json}
     * decides the shards when present; otherwise {@code model.safetensors} alone; otherwise every
     * {@code *.safetensors} file in it.
     */
    public static SafetensorsReader open(Path path) {
        if (Files.isDirectory(path)) {
            return openDirectory(path);
        }
        if (!Files.exists(path)) {
            throw new CheckpointException(path, "no such file or directory: expected a .safetensors file or a"
                    + " model directory");
        }
        if (CheckpointFileNames.isPickle(path)) {
            throw new CheckpointException(path, CheckpointFileNames.pickleRefusal("this file"));
        }
        return openFiles(path, List.of(path), null, Map.of());
    }

    /**
     * The refusal a pickle file gets, for a caller that finds one where it expected safetensors (a PEFT adapter's
     * adapter_model.bin); {@code conversion} says how Python converts it (the library and the call).
     */
    public static CheckpointException pickleRefused(Path pickleFile, String conversion) {
        return new CheckpointException(pickleFile, CheckpointFileNames.pickleRefusal("this file", conversion));
    }

    /** Names of all tensors, in file order and header order within a file. */
    public Set<String> names() {
        return tensors.keySet();
    }

    public boolean contains(String name) {
        return tensors.containsKey(name);
    }

    /** Type, shape and location of one tensor. */
    public TensorInfo info(String name) {
        TensorInfo info = tensors.get(name);
        if (info == null) {
            throw new CheckpointException(checkpoint, name, "no such tensor in this checkpoint");
        }
        return info;
    }

    /**
     * The tensor's raw bytes, memory-mapped read-only and little-endian as stored. The buffer stays valid after
     * {@link #close()}; the mapping is released when the buffer is garbage collected.
     */
    public ByteBuffer bytes(String name) {
        TensorInfo info = info(name);
        return map(info, 0, info.byteLength());
    }

    /** Maps bytes [offset, offset + length) of a tensor's data. */
    private ByteBuffer map(TensorInfo info, long offset, long length) {
        String name = info.name();
        if (length > Integer.MAX_VALUE) {
            throw new CheckpointException(info.file(), name, "a read of " + length + " bytes is more than"
                    + " the 2 GiB one ByteBuffer can hold");
        }
        FileChannel channel = channel(info.file());
        long start = info.dataOffset() + offset;
        try {
            requireUntruncated(info, channel);
            if (length == 0) {
                return ByteBuffer.allocate(0).asReadOnlyBuffer().order(ByteOrder.LITTLE_ENDIAN);
            }
            return channel.map(FileChannel.MapMode.READ_ONLY, start, length).order(ByteOrder.LITTLE_ENDIAN);
        } catch (IOException e) {
            throw readFailure(info.file(), name, "could not map bytes [" + start + ", " + (start + length) + ")", e);
        }
    }

    /** A file truncated after open would make reads of a mapping fault or come up short; check the size first. */
    private static void requireUntruncated(TensorInfo info, FileChannel channel) throws IOException {
        long size = channel.size();
        if (info.dataOffset() + info.byteLength() > size) {
            throw new CheckpointException(info.file(), info.name(), "file shrank to " + size + " bytes since it was"
                    + " opened: expected at least " + (info.dataOffset() + info.byteLength()));
        }
    }

    /**
     * The tensor's bytes as stored, read into {@code destination} (exactly the tensor's byte length remaining) by
     * positional reads: no mapping left for the garbage collector to release, no Java copy when the destination is
     * an array's memory ({@link ArrayTensors#readInto}).
     */
    public void readBytesInto(String name, ByteBuffer destination) {
        TensorInfo info = info(name);
        if (destination.remaining() != info.byteLength()) {
            throw new IllegalArgumentException("tensor " + name + " has " + info.byteLength() + " bytes, the destination "
                    + destination.remaining());
        }
        FileChannel channel = channel(info.file());
        try {
            requireUntruncated(info, channel);
            readFully(info, channel, destination, info.dataOffset());
        } catch (IOException e) {
            throw readFailure(info.file(), name, "could not read bytes [" + info.dataOffset() + ", "
                    + (info.dataOffset() + info.byteLength()) + ")", e);
        }
    }

    /** The tensor as float32, widened from F32, F16 or BF16. */
    public float[] readFloats(String name) {
        TensorInfo info = info(name);
        if (info.numel() > MAX_ARRAY_LENGTH) {
            throw new CheckpointException(info.file(), name, info.numel() + " elements do not fit in a Java array");
        }
        return readFloats(name, 0, (int) info.numel());
    }

    /**
     * Elements [first, first + count) of the tensor in row-major order, as float32: one expert's slice of a fused
     * expert tensor, say, without reading the others.
     *
     * <p>Read with positional reads through a small per-thread buffer, not a mapping: the floats are a copy anyway,
     * and a mapping's pages stay resident (and counted against the process) until the garbage collector happens to
     * free the buffer object, which made streaming a model through memory cost a few tensors more than it needs.
     */
    public float[] readFloats(String name, long first, int count) {
        return readFloats(name, first, count, false);
    }

    /**
     * {@link #readFloats(String, long, int)}, refused when any value is NaN or infinite: what a model's weights must
     * be (one such weight makes every loss NaN and every generated token the same). F16 and BF16 values are checked as
     * they are widened, F32 blocks right after they are copied, while in the CPU's cache: a fraction of the read.
     *
     * @throws CheckpointException naming the file, the tensor, how many values are NaN or infinite and the first
     */
    public float[] readFiniteFloats(String name, long first, int count) {
        return readFloats(name, first, count, true);
    }

    /** {@link #readFiniteFloats(String, long, int)} of the whole tensor. */
    public float[] readFiniteFloats(String name) {
        TensorInfo info = info(name);
        if (info.numel() > MAX_ARRAY_LENGTH) {
            throw new CheckpointException(info.file(), name, info.numel() + " elements do not fit in a Java array");
        }
        return readFloats(name, 0, (int) info.numel(), true);
    }

    /** A block small enough that its floats are still in the L2 cache when the finite check reads them back (F32). */
    private static final int FINITE_CHECK_BLOCK_BYTES = 1 << 17;
    private static final int F32_EXPONENT = 0x7f800000;
    private static final int F16_EXPONENT = 0x7c00;
    private static final int BF16_EXPONENT = 0x7f80;

    private float[] readFloats(String name, long first, int count, boolean requireFinite) {
        TensorInfo info = info(name);
        if (!info.dtype().isFloat32Convertible()) {
            throw new CheckpointException(info.file(), name, "readFloats converts F32, F16 and BF16, but this tensor"
                    + " is " + info.dtype() + "; read it with bytes()");
        }
        if (first < 0 || count < 0 || first + count > info.numel()) {
            throw new IllegalArgumentException("elements [" + first + ", " + (first + count) + ") are outside tensor "
                    + name + " of " + info.numel() + " elements");
        }
        int width = info.dtype().byteSize();
        FileChannel channel = channel(info.file());
        long start = info.dataOffset() + first * width;
        float[] out = new float[count];
        ByteBuffer chunk = READ_BUFFER.get();
        try {
            requireUntruncated(info, channel);
            boolean allFinite = true;
            int blockBytes = requireFinite ? FINITE_CHECK_BLOCK_BYTES : chunk.capacity();
            for (int done = 0; done < count; ) {
                int n = Math.min(count - done, blockBytes / width);
                chunk.clear().limit(n * width);
                readFully(info, channel, chunk, start + (long) done * width);
                chunk.flip();
                if (requireFinite) {
                    allFinite &= widenFinite(info.dtype(), chunk, out, done, n);
                } else {
                    widen(info.dtype(), chunk, out, done, n);
                }
                done += n;
            }
            if (!allFinite) {
                throw notFinite(info, first, out);
            }
        } catch (IOException e) {
            throw readFailure(info.file(), name, "could not read bytes [" + start + ", " + (start + (long) count * width)
                    + ")", e);
        }
        return out;
    }

    /** Fills what remains of {@code buffer} from the file at {@code position} on, by positional reads. */
    private static void readFully(TensorInfo info, FileChannel channel, ByteBuffer buffer, long position)
            throws IOException {
        long start = position - buffer.position();
        while (buffer.hasRemaining()) {
            if (channel.read(buffer, start + buffer.position()) < 0) {
                throw new CheckpointException(info.file(), info.name(), "file ended at byte "
                        + (start + buffer.position()) + " inside the tensor's data");
            }
        }
    }

    private static CheckpointException notFinite(TensorInfo info, long first, float[] values) {
        long nan = 0;
        long infinite = 0;
        int firstBad = -1;
        for (int i = 0; i < values.length; i++) {
            if (!Float.isFinite(values[i])) {
                nan += Float.isNaN(values[i]) ? 1 : 0;
                infinite += Float.isInfinite(values[i]) ? 1 : 0;
                firstBad = firstBad < 0 ? i : firstBad;
            }
        }
        return new CheckpointException(info.file(), info.name(), (nan > 0 ? nan + " NaN" : "")
                + (nan > 0 && infinite > 0 ? " and " : "") + (infinite > 0 ? infinite + " infinite" : "")
                + " value(s) of " + info.numel() + " (the first at element " + (first + firstBad) + "): the checkpoint "
                + "is damaged or was saved after training diverged; no output of this model means anything");
    }

    /**
     * {@link #widen}, and whether every value is finite: NaN and +-infinity are the values whose exponent bits are all
     * ones (IEEE 754), tested on the 16-bit values as they are widened (one max a value), or on the floats of an F32
     * block just copied, still in cache.
     */
    private static boolean widenFinite(DType dtype, ByteBuffer data, float[] out, int offset, int n) {
        int largestExponent = 0;
        switch (dtype) {
            case F32 -> {
                data.asFloatBuffer().get(out, offset, n);
                for (int i = offset; i < offset + n; i++) {
                    largestExponent = Math.max(largestExponent, Float.floatToRawIntBits(out[i]) & F32_EXPONENT);
                }
                return largestExponent != F32_EXPONENT;
            }
            case F16 -> {
                ShortBuffer halves = data.asShortBuffer();
                for (int i = 0; i < n; i++) {
                    short half = halves.get(i);
                    largestExponent = Math.max(largestExponent, half & F16_EXPONENT);
                    out[offset + i] = Float16.toFloat(half);
                }
                return largestExponent != F16_EXPONENT;
            }
            case BF16 -> {
                ShortBuffer halves = data.asShortBuffer();
                for (int i = 0; i < n; i++) {
                    short half = halves.get(i);
                    largestExponent = Math.max(largestExponent, half & BF16_EXPONENT);
                    out[offset + i] = BFloat16.toFloat(half);
                }
                return largestExponent != BF16_EXPONENT;
            }
            default -> throw new AssertionError(dtype);
        }
    }

    private static void widen(DType dtype, ByteBuffer data, float[] out, int offset, int n) {
        switch (dtype) {
            case F32 -> data.asFloatBuffer().get(out, offset, n);
            case F16 -> {
                ShortBuffer halves = data.asShortBuffer();
                for (int i = 0; i < n; i++) {
                    out[offset + i] = Float16.toFloat(halves.get(i));
                }
            }
            case BF16 -> {
                ShortBuffer halves = data.asShortBuffer();
                for (int i = 0; i < n; i++) {
                    out[offset + i] = BFloat16.toFloat(halves.get(i));
                }
            }
            default -> throw new AssertionError(dtype);
        }
    }

    /** The {@code __metadata__} of all files merged; where shards disagree on a key, the first file's value wins. */
    public Map<String, String> metadata() {
        return metadata;
    }

    /** The safetensors files this checkpoint consists of. */
    public List<Path> files() {
        return List.copyOf(channels.keySet());
    }

    /** Closes the files. Buffers already returned by {@link #bytes} stay readable. */
    @Override
    public void close() {
        closed = true;
        closeAll(channels.values());
    }

    private FileChannel channel(Path file) {
        if (closed) {
            throw new IllegalStateException("reader of " + checkpoint + " is closed");
        }
        return channels.get(file);
    }

    private static SafetensorsReader openDirectory(Path dir) {
        Path index = dir.resolve(CheckpointFileNames.INDEX_FILE);
        if (Files.isRegularFile(index)) {
            return openIndexed(dir, index);
        }
        Path single = dir.resolve(CheckpointFileNames.SINGLE_FILE);
        if (Files.isRegularFile(single)) {
            return openFiles(dir, List.of(single), null, Map.of());
        }
        List<Path> entries;
        try (Stream<Path> listing = Files.list(dir)) {
            entries = listing.filter(Files::isRegularFile).sorted().collect(Collectors.toList());
        } catch (IOException e) {
            throw readFailure(dir, null, "could not list the directory", e);
        }
        List<Path> safetensors = entries.stream().filter(CheckpointFileNames::isSafetensors).collect(Collectors.toList());
        // The Hub's Mistral repositories also hold consolidated.safetensors: the same weights under mistral-inference's
        // names (layers.0.attention.wq.weight), with the query and key rows in another rotary order. transformers
        // never reads it; neither does mixtune, beside the Hugging Face files or alone.
        List<Path> mistralNative = safetensors.stream().filter(CheckpointFileNames::isMistralNative).toList();
        safetensors.removeAll(mistralNative);
        if (safetensors.isEmpty() && !mistralNative.isEmpty()) {
            throw new CheckpointException(dir, CheckpointFileNames.mistralNativeRefusal(mistralNative));
        }
        if (safetensors.isEmpty()) {
            List<String> pickles = entries.stream().filter(CheckpointFileNames::isPickle)
                    .map(p -> p.getFileName().toString()).collect(Collectors.toList());
            if (!pickles.isEmpty()) {
                throw new CheckpointException(dir, CheckpointFileNames.pickleRefusal(String.join(", ", pickles)));
            }
            throw new CheckpointException(dir, "no checkpoint found: expected " + CheckpointFileNames.INDEX_FILE + ", "
                    + CheckpointFileNames.SINGLE_FILE + " or other *.safetensors files in the directory");
        }
        requireCompleteShardSets(dir, safetensors);
        return openFiles(dir, safetensors, null, Map.of());
    }

    /**
     * Without an index, shard names like {@code model-00002-of-00003} still say how many shards there must be: a
     * save interrupted before its index was renamed into place must not load as a smaller model.
     */
    private static void requireCompleteShardSets(Path dir, List<Path> files) {
        Map<String, Set<Integer>> present = new TreeMap<>();
        for (Path file : files) {
            CheckpointFileNames.ShardName shard = CheckpointFileNames.parseShardName(file);
            if (shard != null) {
                present.computeIfAbsent(shard.prefix() + "-of-" + shard.count(), k -> new TreeSet<>()).add(shard.number());
            }
        }
        present.forEach((set, numbers) -> {
            int count = Integer.parseInt(set.substring(set.lastIndexOf("-of-") + 4));
            List<Integer> missing = new ArrayList<>();
            for (int i = 1; i <= count && missing.size() < 10; i++) {
                if (!numbers.contains(i)) {
                    missing.add(i);
                }
            }
            if (!missing.isEmpty()) {
                throw new CheckpointException(dir, "incomplete sharded checkpoint: no " + CheckpointFileNames.INDEX_FILE
                        + ", and of the " + count + " shards named " + set.substring(0, set.lastIndexOf("-of-"))
                        + "-NNNNN-of-" + count + ".safetensors, number(s) " + missing + " are missing"
                        + " (interrupted download or save?)");
            }
        });
    }

    private static SafetensorsReader openIndexed(Path dir, Path index) {
        JsonNode root;
        try {
            root = JSON.readTree(index.toFile());
        } catch (JsonProcessingException e) {
            throw new CheckpointException(index, null, "index is not valid JSON: " + e.getMessage(), e);
        } catch (IOException e) {
            throw readFailure(index, null, "could not read", e);
        }
        JsonNode weightMap = root == null ? null : root.get("weight_map");
        if (weightMap == null || !weightMap.isObject()) {
            throw new CheckpointException(index, "index must be a JSON object with a \"weight_map\" object"
                    + " {tensor name: shard file name}");
        }
        Map<String, Path> shardOf = new LinkedHashMap<>();
        Map<Path, String> firstTensorOf = new TreeMap<>();
        Path base = dir.toAbsolutePath().normalize();
        for (Map.Entry<String, JsonNode> e : weightMap.properties()) {
            if (!e.getValue().isTextual()) {
                throw new CheckpointException(index, e.getKey(), "weight_map value must be a shard file name string,"
                        + " found " + e.getValue().getNodeType());
            }
            Path shard = dir.resolve(e.getValue().textValue());
            if (!shard.toAbsolutePath().normalize().getParent().equals(base)) {
                throw new CheckpointException(index, e.getKey(), "weight_map names shard '" + e.getValue().textValue()
                        + "', expected a file name inside " + dir);
            }
            shardOf.put(e.getKey(), shard);
            firstTensorOf.putIfAbsent(shard, e.getKey());
        }
        for (Map.Entry<Path, String> e : firstTensorOf.entrySet()) {
            if (!Files.isRegularFile(e.getKey())) {
                throw new CheckpointException(index, e.getValue(), "index names shard " + e.getKey().getFileName()
                        + " for this tensor, but " + e.getKey() + " does not exist (incomplete download?)");
            }
        }
        return openFiles(dir, new ArrayList<>(firstTensorOf.keySet()), index, shardOf);
    }

    private static SafetensorsReader openFiles(Path checkpoint, List<Path> files, Path index, Map<String, Path> shardOf) {
        Map<Path, FileChannel> channels = new LinkedHashMap<>();
        Path current = checkpoint;
        try {
            Map<String, TensorInfo> tensors = new LinkedHashMap<>();
            Map<String, String> metadata = new LinkedHashMap<>();
            for (Path file : files) {
                current = file;
                FileChannel channel = FileChannel.open(file, StandardOpenOption.READ);
                channels.put(file, channel);
                SafetensorsHeader header = SafetensorsHeader.read(file, channel);
                for (TensorInfo info : header.tensors()) {
                    TensorInfo earlier = tensors.putIfAbsent(info.name(), info);
                    if (earlier != null) {
                        throw new CheckpointException(file, info.name(), "tensor also stored in " + earlier.file()
                                + ": expected each tensor in exactly one shard");
                    }
                }
                header.metadata().forEach(metadata::putIfAbsent);
            }
            for (Map.Entry<String, Path> e : shardOf.entrySet()) {
                TensorInfo info = tensors.get(e.getKey());
                if (info == null || !info.file().equals(e.getValue())) {
                    throw new CheckpointException(e.getValue(), e.getKey(), "index " + index + " places this tensor"
                            + " in this shard, but the shard's header does not contain it"
                            + (info == null ? "" : " (it is in " + info.file() + ")"));
                }
            }
            return new SafetensorsReader(checkpoint, tensors, channels, metadata);
        } catch (IOException e) {
            closeAll(channels.values());
            throw readFailure(current, null, "could not read", e);
        } catch (RuntimeException e) {
            closeAll(channels.values());
            throw e;
        }
    }

    /**
     * What an IOException while reading {@code file} means. A file that ends early (EOFException), JSON that does not
     * parse, a file gone: the checkpoint on disk is at fault (CheckpointException, the user's to fix). Any other (EIO,
     * a failed mmap, an interrupted or closed channel, permissions) is the read failing, not the content: an
     * UncheckedIOException that still names the file, so the CLI reports a failure, not a damaged download.
     */
    private static RuntimeException readFailure(Path file, String tensor, String what, IOException e) {
        if (e instanceof EOFException || e instanceof JsonProcessingException || e instanceof NoSuchFileException) {
            return new CheckpointException(file, tensor, what + ": " + e.getMessage(), e);
        }
        return new UncheckedIOException(file + (tensor == null ? "" : ": tensor '" + tensor + "'") + ": " + what
                + ": " + e, e);
    }

    private static void closeAll(Iterable<FileChannel> channels) {
        for (FileChannel channel : channels) {
            try {
                channel.close();
            } catch (IOException ignored) {
                // Read-only channels have nothing to flush; a failing close loses nothing.
            }
        }
    }
}
