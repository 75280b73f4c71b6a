package io.mixtune.model.safetensors;

import java.util.Optional;

/**
 * Element types of the safetensors format, named as they are spelled in a header's {@code "dtype"} field.
 *
 * <p>The writer produces F32, F16 and BF16 from floats and any type from raw bytes; the reader accepts every
 * whole-byte type of the format so that a checkpoint carrying, say, FP8 scales or int64 buffers can still be
 * opened and its float tensors read. The sub-byte types (F4, F6) are left out: their byte spans are not
 * {@code numel * size}.
 */
public enum DType {
    BOOL(1),
    U8(1),
    I8(1),
    F8_E5M2(1),
    F8_E4M3(1),
    I16(2),
    U16(2),
    F16(2),
    BF16(2),
    I32(4),
    U32(4),
    F32(4),
    I64(8),
    U64(8),
    F64(8);

    private final int byteSize;

    DType(int byteSize) {
        this.byteSize = byteSize;
    }

    /** Bytes per element. */
    public int byteSize() {
        return byteSize;
    }

    /** True for the types {@link SafetensorsReader#readFloats} and the writer's float path convert. */
    public boolean isFloat32Convertible() {
        return this == F32 || this == F16 || this == BF16;
    }

    /** The type a header's {@code "dtype"} string names, or empty for a string the format does not define. */
    public static Optional<DType> fromHeaderName(String name) {
        for (DType type : values()) {
            if (type.name().equals(name)) {
                return Optional.of(type);
            }
        }
        return Optional.empty();
    }
}
