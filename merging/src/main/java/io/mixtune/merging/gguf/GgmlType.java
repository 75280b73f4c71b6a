package io.mixtune.merging.gguf;

/**
 * The tensor types a GGUF export writes, with ggml's ids and block layouts (ggml.h's ggml_type, the gguf package's
 * GGML_QUANT_SIZES): a block of {@link #blockSize} values takes {@link #typeSize} bytes.
 */
public enum GgmlType {
    F32(0, 1, 4),
    F16(1, 1, 2),
    /** 32 values: an fp16 scale d, then 16 bytes of 4-bit q (low nibbles: values 0-15, high: 16-31), x = d (q - 8). */
    Q4_0(2, 32, 18),
    /** 32 values: an fp16 scale d, then 32 int8 q, x = d q. */
    Q8_0(8, 32, 34);

    private final int id;
    private final int blockSize;
    private final int typeSize;

    GgmlType(int id, int blockSize, int typeSize) {
        this.id = id;
        this.blockSize = blockSize;
        this.typeSize = typeSize;
    }

    public int id() {
        return id;
    }

    public int blockSize() {
        return blockSize;
    }

    public int typeSize() {
        return typeSize;
    }

    /** The bytes of {@code elements} values; elements must be a whole number of blocks. */
    public long bytes(long elements) {
        return elements / blockSize * typeSize;
    }

    public static GgmlType ofId(int id) {
        for (GgmlType type : values()) {
            if (type.id == id) {
                return type;
            }
        }
        throw new IllegalArgumentException("ggml type " + id + " is not one mixtune reads (F32, F16, Q4_0, Q8_0)");
    }
}
