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
    /** 32 values: fp16 d and m, then 16 bytes of 4-bit q (low nibbles: values 0-15, high: 16-31), x = d q + m. */
    Q4_1(3, 32, 20),
    /** 32 values: fp16 d, 32 fifth bits (uint32), 16 bytes of low nibbles, x = d (q - 16). */
    Q5_0(6, 32, 22),
    /** 32 values: fp16 d and m, 32 fifth bits (uint32), 16 bytes of low nibbles, x = d q + m. */
    Q5_1(7, 32, 24),
    /** 32 values: an fp16 scale d, then 32 int8 q, x = d q. */
    Q8_0(8, 32, 34),
    /** 256 values: 16 bytes of 4-bit group scales and mins, 64 bytes of 2-bit q, fp16 d and dmin. */
    Q2_K(10, 256, 84),
    /** 256 values: 32 bytes of third bits, 64 bytes of low 2 bits, 12 bytes of 6-bit group scales, fp16 d. */
    Q3_K(11, 256, 110),
    /** 256 values: fp16 d and dmin, 12 bytes of 6-bit group scales and mins, 128 bytes of 4-bit q. */
    Q4_K(12, 256, 144),
    /** 256 values: as Q4_K, with 32 bytes of fifth bits before the 128 of low nibbles. */
    Q5_K(13, 256, 176),
    /** 256 values: 128 bytes of low nibbles, 64 of high 2 bits, 16 int8 group scales, fp16 d. */
    Q6_K(14, 256, 210),
    /** 32 values: fp16 d, then 16 bytes of 4-bit indices into kvalues_iq4nl (low nibbles 0-15, high 16-31). */
    IQ4_NL(20, 32, 18),
    /**
     * 256 values: fp16 d, 16 bits of the 6-bit group scales' high 2 bits, 4 bytes of their low nibbles, 128 bytes of
     * 4-bit kvalues_iq4nl indices.
     */
    IQ4_XS(23, 256, 136);

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

    /**
     * The type as llama-quantize's {@code --output-tensor-type} and {@code --token-embedding-type} name it
     * (ggml_type_name, any case: f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K ... q6_K).
     *
     * @throws IllegalArgumentException naming the option, for any other name (ggml's other types, which mixtune does
     *     not encode, among them)
     */
    public static GgmlType parse(String option, String name) {
        for (GgmlType type : values()) {
            if (type.name().equalsIgnoreCase(name)) {
                return type;
            }
        }
        // "--tensor-type attn_v=" is the assignment's first half: the type follows it without a space
        String given = option.endsWith("=") ? option + name : option + " " + name;
        throw new IllegalArgumentException(given + " is not a ggml type mixtune encodes; expected one of "
                + java.util.Arrays.stream(values()).map(t -> t.name().toLowerCase(java.util.Locale.ROOT))
                        .collect(java.util.stream.Collectors.joining(", ")));
    }

    public static GgmlType ofId(int id) {
        for (GgmlType type : values()) {
            if (type.id == id) {
                return type;
            }
        }
        throw new IllegalArgumentException("ggml type " + id + " is not one mixtune reads (F32, F16, Q4_0, Q4_1, Q5_0, "
                + "Q5_1, Q8_0, Q2_K ... Q6_K, IQ4_NL, IQ4_XS)");
    }
}
