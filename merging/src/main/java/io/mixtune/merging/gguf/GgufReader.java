package io.mixtune.merging.gguf;

import io.mixtune.model.safetensors.Float16;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Reads a GGUF version 3 file of the kinds {@link GgufWriter} writes back: the metadata in file order, the tensor
 * table, each tensor's bytes and its values dequantized (F32, F16, Q8_0, Q4_0, as gguf.quants.dequantize). What tests
 * and users check an export with, without Python.
 */
public final class GgufReader {
    /** A metadata value: its gguf type name (UINT32, STRING, ARRAY[STRING], ...) and value (List for arrays). */
    public record Value(String type, Object value) {}

    /** A tensor's entry: ggml dimensions (fastest-varying first), type, offset from the data section. */
    public record TensorInfo(String name, long[] dimensions, GgmlType type, long offset) {
        public long elements() {
            long n = 1;
            for (long d : dimensions) {
                n = Math.multiplyExact(n, d);
            }
            return n;
        }
    }

    private static final String[] TYPE_NAMES = {"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
            "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};

    private final Path path;
    /** The file's first 2 GiB at most (a mapping's limit): the header; tensor data is read from {@link #path}. */
    private final ByteBuffer file;
    private final Map<String, Value> metadata = new LinkedHashMap<>();
    private final Map<String, TensorInfo> tensors = new LinkedHashMap<>();
    private final long dataStart;

    private GgufReader(Path path, ByteBuffer file) {
        this.path = path;
        this.file = file;
        if (file.getInt() != GgufWriter.MAGIC) {
            throw new IllegalArgumentException("not a GGUF file (no GGUF magic)");
        }
        int version = file.getInt();
        if (version != GgufWriter.VERSION) {
            throw new IllegalArgumentException("GGUF version " + version + "; mixtune reads version 3");
        }
        long tensorCount = file.getLong();
        long kvCount = file.getLong();
        for (long i = 0; i < kvCount; i++) {
            String key = string();
            int type = file.getInt();
            metadata.put(key, value(type));
        }
        for (long i = 0; i < tensorCount; i++) {
            String name = string();
            long[] dims = new long[file.getInt()];
            for (int d = 0; d < dims.length; d++) {
                dims[d] = file.getLong();
            }
            tensors.put(name, new TensorInfo(name, dims, GgmlType.ofId(file.getInt()), file.getLong()));
        }
        dataStart = GgufWriter.padded(file.position());
    }

    /**
     * Reads {@code path}'s header. Only its first 2 GiB are mapped (FileChannel.map's limit; a 7B model's export is
     * 14 GB): the header lies there, and each tensor's data is read at its position when asked for.
     */
    public static GgufReader open(Path path) throws IOException {
        try (FileChannel channel = FileChannel.open(path, StandardOpenOption.READ)) {
            return new GgufReader(path, channel.map(FileChannel.MapMode.READ_ONLY, 0,
                    Math.min(channel.size(), Integer.MAX_VALUE)).order(ByteOrder.LITTLE_ENDIAN));
        }
    }

    public Map<String, Value> metadata() {
        return metadata;
    }

    public Map<String, TensorInfo> tensors() {
        return tensors;
    }

    /** The tensor's bytes as stored. */
    public byte[] bytes(String name) {
        TensorInfo info = tensors.get(name);
        byte[] bytes = new byte[Math.toIntExact(info.type().bytes(info.elements()))];
        ByteBuffer target = ByteBuffer.wrap(bytes);
        long position = dataStart + info.offset(); // a long: tensors lie past 2 GiB in any real export
        try (FileChannel channel = FileChannel.open(path, StandardOpenOption.READ)) {
            while (target.hasRemaining()) {
                if (channel.read(target, position + target.position()) < 0) {
                    throw new IllegalArgumentException(path + ": " + name + " is cut short (" + target.position()
                            + " of " + bytes.length + " bytes)");
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(path + ": cannot read " + name + ": " + e.getMessage(), e);
        }
        return bytes;
    }

    /** The tensor's values as float32, in row-major order (ggml's dimension 0 fastest). */
    public float[] floats(String name) {
        TensorInfo info = tensors.get(name);
        ByteBuffer data = ByteBuffer.wrap(bytes(name)).order(ByteOrder.LITTLE_ENDIAN);
        float[] values = new float[Math.toIntExact(info.elements())];
        switch (info.type()) {
            case F32 -> data.asFloatBuffer().get(values);
            case F16 -> {
                for (int i = 0; i < values.length; i++) {
                    values[i] = Float16.toFloat(data.getShort());
                }
            }
            case Q8_0 -> {
                for (int block = 0; block < values.length; block += 32) {
                    float d = Float16.toFloat(data.getShort());
                    for (int j = 0; j < 32; j++) {
                        values[block + j] = data.get() * d;
                    }
                }
            }
            case Q4_0 -> {
                for (int block = 0; block < values.length; block += 32) {
                    float d = Float16.toFloat(data.getShort());
                    for (int j = 0; j < 16; j++) {
                        int packed = data.get() & 0xff;
                        values[block + j] = d * ((packed & 0x0f) - 8);
                        values[block + j + 16] = d * ((packed >>> 4) - 8);
                    }
                }
            }
        }
        return values;
    }

    private String string() {
        byte[] utf8 = new byte[Math.toIntExact(file.getLong())];
        file.get(utf8);
        return new String(utf8, StandardCharsets.UTF_8);
    }

    private Value value(int type) {
        String name = type < TYPE_NAMES.length ? TYPE_NAMES[type] : "type " + type;
        return switch (name) {
            case "UINT8" -> new Value(name, (long) (file.get() & 0xff));
            case "INT8" -> new Value(name, (long) file.get());
            case "UINT16" -> new Value(name, (long) (file.getShort() & 0xffff));
            case "INT16" -> new Value(name, (long) file.getShort());
            case "UINT32" -> new Value(name, file.getInt() & 0xffffffffL);
            case "INT32" -> new Value(name, (long) file.getInt());
            case "FLOAT32" -> new Value(name, (double) file.getFloat());
            case "BOOL" -> new Value(name, file.get() != 0);
            case "STRING" -> new Value(name, string());
            case "UINT64", "INT64" -> new Value(name, file.getLong());
            case "FLOAT64" -> new Value(name, file.getDouble());
            case "ARRAY" -> {
                int elementType = file.getInt();
                long count = file.getLong();
                List<Object> elements = new ArrayList<>();
                String elementName = "?";
                for (long i = 0; i < count; i++) {
                    Value element = value(elementType);
                    elementName = element.type();
                    elements.add(element.value());
                }
                if (count == 0) {
                    elementName = elementType < TYPE_NAMES.length ? TYPE_NAMES[elementType] : "?";
                }
                yield new Value("ARRAY[" + elementName + "]", elements);
            }
            default -> throw new IllegalArgumentException("unknown GGUF value type " + type);
        };
    }
}
