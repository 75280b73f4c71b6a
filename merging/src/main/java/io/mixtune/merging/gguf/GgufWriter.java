package io.mixtune.merging.gguf;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

/**
 * A GGUF version 3 file (ggml's docs/gguf.md), little-endian: "GGUF", version, tensor count, key-value count, the
 * key-values in the order they were put, each tensor's name, dimensions (ggml order: the fastest-varying first, numpy's
 * shape reversed), type and offset, then the tensor data, each tensor starting on a 32-byte boundary
 * (general.alignment's default). The metadata is held in memory; tensors stream from their {@link TensorSource} one at
 * a time, so a file of any size is written with one tensor in memory.
 */
public final class GgufWriter {
    static final int ALIGNMENT = 32;
    static final int MAGIC = 0x46554747; // "GGUF" read as a little-endian uint32
    static final int VERSION = 3;
    /** Values encoded at a time: whole blocks of every type (32), 4 MiB as f32. */
    static final int SLICE_VALUES = 1 << 20;

    /** gguf.md's gguf_metadata_value_type. */
    static final int UINT32 = 4;
    static final int INT32 = 5;
    static final int FLOAT32 = 6;
    static final int BOOL = 7;
    static final int STRING = 8;
    static final int ARRAY = 9;

    /** Emits a tensor's values in row-major (numpy) order, in parts of whole blocks, each part to the sink. */
    @FunctionalInterface
    public interface TensorSource {
        void emit(Consumer<float[]> sink);
    }

    private record Value(int type, int elementType, Object value) {}

    private record Tensor(String name, long[] shape, GgmlType type, TensorSource source) {
        long elements() {
            return Arrays.stream(shape).reduce(1, Math::multiplyExact);
        }
    }

    private final Map<String, Value> values = new LinkedHashMap<>();
    private final List<Tensor> tensors = new ArrayList<>();
    private boolean refuseInvalidData;
    private int threads = 1;
    private final Map<String, float[]> importance = new java.util.HashMap<>();

    public void putUint32(String key, long value) {
        put(key, new Value(UINT32, 0, value));
    }

    public void putFloat32(String key, float value) {
        put(key, new Value(FLOAT32, 0, value));
    }

    public void putBool(String key, boolean value) {
        put(key, new Value(BOOL, 0, value));
    }

    public void putString(String key, String value) {
        put(key, new Value(STRING, 0, value));
    }

    /**
     * A string value as these bytes, which need not be whole UTF-8: llama-quantize's kv overrides copy a C string
     * cut at 127 bytes, inside a character where it falls in one.
     */
    void putStringBytes(String key, byte[] value) {
        put(key, new Value(STRING, 0, value.clone()));
    }

    public void putStrings(String key, List<String> value) {
        put(key, new Value(ARRAY, STRING, List.copyOf(value)));
    }

    public void putFloat32s(String key, float[] value) {
        put(key, new Value(ARRAY, FLOAT32, value.clone()));
    }

    public void putInt32s(String key, int[] value) {
        put(key, new Value(ARRAY, INT32, value.clone()));
    }

    private void put(String key, Value value) {
        if (values.containsKey(key)) {
            throw new IllegalStateException("duplicate GGUF key " + key);
        }
        values.put(key, value);
    }

    /**
     * @param shape numpy's shape (rows last-but-one, columns last); the row length must be whole blocks of the type
     */
    public void addTensor(String name, long[] shape, GgmlType type, TensorSource source) {
        if (shape[shape.length - 1] % type.blockSize() != 0) {
            throw new IllegalArgumentException(name + ": rows of " + shape[shape.length - 1] + " values are not whole "
                    + type + " blocks of " + type.blockSize());
        }
        tensors.add(new Tensor(name, shape.clone(), type, source));
    }

    /**
     * Puts the tensors in {@code order} and gives each the type {@code types} names (llama-quantize's rewrite of an
     * f32 file, which writes its tensors in its own order).
     */
    void reorderAndRetype(java.util.Comparator<String> order, Map<String, GgmlType> types) {
        tensors.sort(java.util.Comparator.comparing(Tensor::name, order));
        for (int i = 0; i < tensors.size(); i++) {
            Tensor tensor = tensors.get(i);
            GgmlType type = types.get(tensor.name());
            if (tensor.shape()[tensor.shape().length - 1] % type.blockSize() != 0) {
                throw new IllegalArgumentException(tensor.name() + ": rows are not whole " + type + " blocks");
            }
            tensors.set(i, new Tensor(tensor.name(), tensor.shape(), type, tensor.source()));
        }
    }

    /**
     * Refuses, as llama-quantize does, a tensor with a NaN or an infinity (llama_model_loader::load_data_for with
     * check_tensors: "tensor '...' has invalid data"), or whose encoding has a NaN or infinite fp16 scale or value
     * (llama_tensor_quantize_impl's ggml_validate_row_data: "quantized data validation failed"): a finite weight over
     * what fp16 holds. The convert_hf_to_gguf.py types (f32 ... q8_0) write such values as the converter does.
     */
    void refuseInvalidData() {
        refuseInvalidData = true;
    }

    /**
     * The threads that encode the tensors (default 1): a slice of a part is cut among them ({@link GgufEncoder}), the
     * bytes the same for any number.
     */
    public void threads(int count) {
        if (count < 1) {
            throw new IllegalArgumentException("threads " + count + " is under 1");
        }
        this.threads = count;
    }

    /**
     * The importance matrix weights (ne0 per matrix) {@code name} is quantized with, as llama-quantize's --imatrix
     * gives them to ggml_quantize_chunk ({@link GgmlWeightedQuants}); types that take none (F16, Q8_0) ignore them.
     */
    void importance(String name, float[] weights) {
        importance.put(name, weights);
    }

    /** Moves {@code key} to the end, as gguf_set_val_* does with a key already present (remove, then append). */
    void moveToEnd(String key) {
        Value value = values.remove(key);
        if (value == null) {
            throw new IllegalStateException("no GGUF key " + key);
        }
        values.put(key, value);
    }

    /** The tensors' numpy shapes by name, in the order added. */
    public Map<String, long[]> shapes() {
        Map<String, long[]> shapes = new LinkedHashMap<>();
        tensors.forEach(tensor -> shapes.put(tensor.name(), tensor.shape().clone()));
        return shapes;
    }

    /** Writes the whole file to {@code file} (created or truncated). */
    public void write(Path file) throws IOException {
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING); GgufEncoder encoder = new GgufEncoder(threads)) {
            Buffer header = new Buffer();
            header.buffer().putInt(MAGIC).putInt(VERSION).putLong(tensors.size()).putLong(values.size());
            for (Map.Entry<String, Value> entry : values.entrySet()) {
                header.string(entry.getKey());
                header.ensure(8).putInt(entry.getValue().type());
                header.value(entry.getValue());
            }
            long offset = 0;
            for (Tensor tensor : tensors) {
                header.string(tensor.name());
                header.ensure(4 + 8 * tensor.shape().length + 12).putInt(tensor.shape().length);
                for (int d = tensor.shape().length - 1; d >= 0; d--) {
                    header.buffer().putLong(tensor.shape()[d]);
                }
                header.buffer().putInt(tensor.type().id()).putLong(offset);
                offset += padded(tensor.type().bytes(tensor.elements()));
            }
            header.ensure(ALIGNMENT);
            header.buffer().put(new byte[(int) (padded(header.buffer().position()) - header.buffer().position())]);
            writeFully(channel, header.buffer().flip());
            // a part is encoded in slices: its bytes can pass 2 GiB (a ByteBuffer's limit; an f32 tensor of 2^29
            // values), and one slice's buffer is all the memory the encoding takes besides the part
            ByteBuffer slice = ByteBuffer.allocate((int) GgmlType.F32.bytes(SLICE_VALUES))
                    .order(ByteOrder.LITTLE_ENDIAN);
            for (Tensor tensor : tensors) {
                long[] written = {0};
                tensor.source().emit(part -> {
                    int from = 0;
                    while (from < part.length) {
                        int count = Math.min(SLICE_VALUES, part.length - from);
                        if (refuseInvalidData) {
                            requireFinite(tensor.name(), part, from, count, written[0]);
                        }
                        try {
                            float[] weights = importance.get(tensor.name());
                            boolean weighted = weights != null && tensor.type() != GgmlType.F16
                                    && tensor.type() != GgmlType.F32 && tensor.type() != GgmlType.Q8_0;
                            if (weighted || tensor.type() == GgmlType.IQ4_NL || tensor.type() == GgmlType.IQ4_XS) {
                                long[] shape = tensor.shape();
                                long columns = shape[shape.length - 1];
                                long matrix = columns * (shape.length > 1 ? shape[shape.length - 2] : 1);
                                encoder.encode(part, from, count, tensor.type(), slice.clear(), new GgmlWeightedQuants
                                        .Layout(written[0], Math.toIntExact(columns), matrix, weights));
                            } else {
                                encoder.encode(part, from, count, tensor.type(), slice.clear());
                            }
                        } catch (RuntimeException e) {
                            // a quantizer's failure is ours, not the user's (not an IllegalArgumentException), and a
                            // pool thread's exception carries no frame that tells the tensor
                            throw new IllegalStateException(tensor.name() + ": encoding values from " + (written[0]
                                    + from) + " as " + tensor.type() + " failed: " + e, e);
                        }
                        if (refuseInvalidData) {
                            requireFiniteScales(tensor.name(), tensor.type(), slice, written[0] + from);
                        }
                        try {
                            writeFully(channel, slice.flip());
                        } catch (IOException e) {
                            throw new java.io.UncheckedIOException(e);
                        }
                        from += count;
                    }
                    written[0] += part.length;
                });
                if (written[0] != tensor.elements()) {
                    throw new IllegalStateException(tensor.name() + ": " + written[0] + " values written, "
                            + tensor.elements() + " expected");
                }
                long size = tensor.type().bytes(tensor.elements());
                writeFully(channel, ByteBuffer.allocate((int) (padded(size) - size)));
            }
            channel.force(true);
        } catch (java.io.UncheckedIOException e) {
            throw e.getCause();
        }
    }

    private static void requireFinite(String name, float[] part, int from, int count, long partStart) {
        for (int i = from; i < from + count; i++) {
            if (!Float.isFinite(part[i])) {
                throw new IllegalArgumentException(name + " holds " + part[i] + " at value " + (partStart + i)
                        + "; llama-quantize refuses such a tensor (\"has invalid data\"), and a k-quant export does"
                        + " too: fix the checkpoint, or export --type f32 / f16 / q8_0, which keep it");
            }
        }
    }

    /**
     * ggml_validate_row_data's check of an encoding: every fp16 scale of a block (d, and dmin or m where the type has
     * one) finite, every value of F16 finite; F32 needs none (its input was checked).
     */
    private static void requireFiniteScales(String name, GgmlType type, ByteBuffer encoded, long firstValue) {
        int[] scaleOffsets = switch (type) {
            case F32 -> new int[0];
            case F16, Q4_0, Q5_0, Q8_0 -> new int[] {0};
            case Q4_1, Q5_1, Q4_K, Q5_K -> new int[] {0, 2};
            case Q2_K -> new int[] {80, 82};
            case Q3_K -> new int[] {108};
            case Q6_K -> new int[] {208};
            case IQ4_NL, IQ4_XS -> new int[] {0};
        };
        for (int block = 0; block * type.typeSize() < encoded.position(); block++) {
            for (int offset : scaleOffsets) {
                short half = encoded.getShort(block * type.typeSize() + offset);
                if ((half & 0x7c00) == 0x7c00) {
                    long first = firstValue + (long) block * type.blockSize();
                    throw new IllegalArgumentException(name + ": the block of values from " + first + " needs an fp16"
                            + " scale or value over 65504 as " + type + " (a weight too large for it); llama-quantize"
                            + " refuses such a tensor (\"quantized data validation failed\"), and a k-quant export"
                            + " does too: fix the checkpoint, or export --type f32");
                }
            }
        }
    }

    static long padded(long size) {
        return (size + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    }

    private static void writeFully(FileChannel channel, ByteBuffer bytes) throws IOException {
        while (bytes.hasRemaining()) {
            channel.write(bytes);
        }
    }

    /** A growing little-endian buffer for the header. */
    private static final class Buffer {
        private ByteBuffer buffer = ByteBuffer.allocate(1 << 16).order(ByteOrder.LITTLE_ENDIAN);

        ByteBuffer buffer() {
            return buffer;
        }

        ByteBuffer ensure(int more) {
            if (buffer.remaining() < more) {
                ByteBuffer grown = ByteBuffer.allocate(Math.max(buffer.capacity() * 2, buffer.position() + more))
                        .order(ByteOrder.LITTLE_ENDIAN);
                grown.put(buffer.flip());
                buffer = grown;
            }
            return buffer;
        }

        void string(String text) {
            byte[] utf8 = text.getBytes(StandardCharsets.UTF_8);
            ensure(8 + utf8.length).putLong(utf8.length).put(utf8);
        }

        void value(Value value) {
            switch (value.type()) {
                case UINT32 -> ensure(4).putInt((int) (long) (Long) value.value());
                case FLOAT32 -> ensure(4).putFloat((Float) value.value());
                case BOOL -> ensure(1).put((byte) ((Boolean) value.value() ? 1 : 0));
                case STRING -> {
                    if (value.value() instanceof byte[] bytes) {
                        ensure(8 + bytes.length).putLong(bytes.length).put(bytes);
                    } else {
                        string((String) value.value());
                    }
                }
                case ARRAY -> array(value);
                default -> throw new IllegalStateException("type " + value.type());
            }
        }

        @SuppressWarnings("unchecked")
        private void array(Value value) {
            switch (value.elementType()) {
                case STRING -> {
                    List<String> strings = (List<String>) value.value();
                    ensure(12).putInt(STRING).putLong(strings.size());
                    strings.forEach(this::string);
                }
                case FLOAT32 -> {
                    float[] floats = (float[]) value.value();
                    ensure(12 + 4 * floats.length).putInt(FLOAT32).putLong(floats.length);
                    for (float f : floats) {
                        buffer.putFloat(f);
                    }
                }
                case INT32 -> {
                    int[] ints = (int[]) value.value();
                    ensure(12 + 4 * ints.length).putInt(INT32).putLong(ints.length);
                    for (int i : ints) {
                        buffer.putInt(i);
                    }
                }
                default -> throw new IllegalStateException("array of " + value.elementType());
            }
        }
    }
}
