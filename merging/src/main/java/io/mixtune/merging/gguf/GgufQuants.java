package io.mixtune.merging.gguf;

import io.mixtune.model.safetensors.Float16;
import java.nio.ByteBuffer;

/**
 * Float32 values to GGUF tensor bytes, bit for bit as the gguf Python package's {@code gguf.quants.quantize} gives
 * them (which follows ggml-quants.c's reference quantizers): every step in float32 as numpy computes it, fp16 by
 * round-to-nearest-even ({@link Float16}). Tested on the package's own outputs ({@code GgufQuantsTest}).
 */
public final class GgufQuants {
    private GgufQuants() {}

    /** Appends {@code count} values from {@code values[from]} as {@code type} to {@code out} (little-endian). */
    public static void encode(float[] values, int from, int count, GgmlType type, ByteBuffer out) {
        if (count % type.blockSize() != 0) {
            throw new IllegalArgumentException(count + " values are not whole blocks of " + type.blockSize());
        }
        switch (type) {
            case F32 -> {
                for (int i = from; i < from + count; i++) {
                    out.putFloat(values[i]);
                }
            }
            case F16 -> {
                for (int i = from; i < from + count; i++) {
                    out.putShort(Float16.fromFloat(values[i]));
                }
            }
            case Q8_0 -> {
                for (int block = from; block < from + count; block += 32) {
                    q8_0(values, block, out);
                }
            }
            case Q4_0 -> {
                for (int block = from; block < from + count; block += 32) {
                    q4_0(values, block, out);
                }
            }
            default -> {
                for (int block = from; block < from + count; block += type.blockSize()) {
                    switch (type) {
                        case Q4_1 -> GgmlKQuants.q4_1(values, block, out);
                        case Q5_0 -> GgmlKQuants.q5_0(values, block, out);
                        case Q5_1 -> GgmlKQuants.q5_1(values, block, out);
                        case Q2_K -> GgmlKQuants.q2_K(values, block, out);
                        case Q3_K -> GgmlKQuants.q3_K(values, block, out);
                        case Q4_K -> GgmlKQuants.q4_K(values, block, out);
                        case Q5_K -> GgmlKQuants.q5_K(values, block, out);
                        case Q6_K -> GgmlKQuants.q6_K(values, block, out);
                        // quantize_iq4_nl / quantize_iq4_xs without an imatrix (weights x^2) need no row: the block
                        // is laid out as a row of its own, starting at position 0
                        case IQ4_NL, IQ4_XS -> GgmlWeightedQuants.encode(values, block, type.blockSize(), type, out,
                                new GgmlWeightedQuants.Layout(-block, type.blockSize(), type.blockSize(), null));
                        default -> throw new IllegalStateException(type.name());
                    }
                }
            }
        }
    }

    /**
     * gguf.quants.Q8_0.quantize_blocks: d = max|x| / 127, q = roundf(x * (1 / d)) (0 where d is 0), halves rounded
     * away from zero as C's roundf (np_roundf), d stored as fp16.
     */
    private static void q8_0(float[] values, int first, ByteBuffer out) {
        float amax = 0;
        for (int i = first; i < first + 32; i++) {
            amax = Math.max(amax, Math.abs(values[i]));
        }
        float d = amax / 127f;
        float id = d == 0 ? 0f : 1f / d;
        out.putShort(Float16.fromFloat(d));
        for (int i = first; i < first + 32; i++) {
            out.put((byte) roundHalfAway(values[i] * id));
        }
    }

    /**
     * gguf.quants.Q4_0.quantize_blocks: the value of largest magnitude (the first of equals) max, d = max / -8,
     * q = trunc(x * (1 / d) + 8.5) clipped to [0, 15]; value j's nibble is low for j < 16, high for j + 16.
     */
    private static void q4_0(float[] values, int first, ByteBuffer out) {
        float max = 0;
        float amax = -1;
        for (int i = first; i < first + 32; i++) {
            if (Math.abs(values[i]) > amax) {
                amax = Math.abs(values[i]);
                max = values[i];
            }
        }
        float d = max / -8f;
        float id = d == 0 ? 0f : 1f / d;
        out.putShort(Float16.fromFloat(d));
        for (int j = 0; j < 16; j++) {
            int low = nibble(values[first + j] * id);
            int high = nibble(values[first + j + 16] * id);
            out.put((byte) (low | (high << 4)));
        }
    }

    private static int nibble(float scaled) {
        float shifted = scaled + 8.5f;
        int q = (int) shifted; // trunc; never negative here (scaled >= -8 up to rounding)
        return Math.max(0, Math.min(15, q));
    }

    /** np_roundf: floor(|x|) + floor(2 (|x| - floor(|x|))), with the sign of x (C's roundf, ties away from zero). */
    static int roundHalfAway(float x) {
        float a = Math.abs(x);
        float floored = (float) Math.floor(a);
        float b = floored + (float) Math.floor(2 * (a - floored));
        return (int) Math.signum(x) * (int) b;
    }
}
