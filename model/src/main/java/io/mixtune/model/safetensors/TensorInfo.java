package io.mixtune.model.safetensors;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.Objects;

/**
 * Where one tensor lives: its type and shape from the header, the shard file, and the absolute byte range in that
 * file (the header's {@code data_offsets} are relative to the data buffer; these are not).
 */
public record TensorInfo(String name, DType dtype, long[] shape, Path file, long dataOffset, long byteLength) {

    public TensorInfo {
        Objects.requireNonNull(name, "name");
        Objects.requireNonNull(dtype, "dtype");
        Objects.requireNonNull(file, "file");
        shape = shape.clone();
        for (long dim : shape) {
            if (dim < 0) {
                throw new IllegalArgumentException("tensor '" + name + "': negative dimension in " + Arrays.toString(shape));
            }
        }
        if (dataOffset < 0 || byteLength < 0) {
            throw new IllegalArgumentException("tensor '" + name + "': negative offset or length");
        }
    }

    /** A copy: the record stays immutable. */
    @Override
    public long[] shape() {
        return shape.clone();
    }

    /** Number of elements; 1 for a scalar (empty shape). */
    public long numel() {
        long n = 1;
        for (long dim : shape) {
            n = Math.multiplyExact(n, dim);
        }
        return n;
    }

    @Override
    public boolean equals(Object other) {
        return other instanceof TensorInfo that
                && name.equals(that.name)
                && dtype == that.dtype
                && Arrays.equals(shape, that.shape)
                && file.equals(that.file)
                && dataOffset == that.dataOffset
                && byteLength == that.byteLength;
    }

    @Override
    public int hashCode() {
        return Objects.hash(name, dtype, Arrays.hashCode(shape), file, dataOffset, byteLength);
    }

    @Override
    public String toString() {
        return "TensorInfo[" + name + " " + dtype + " " + Arrays.toString(shape) + " in " + file
                + " @" + dataOffset + "+" + byteLength + "]";
    }
}
