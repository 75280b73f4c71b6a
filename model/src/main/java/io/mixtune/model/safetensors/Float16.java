package io.mixtune.model.safetensors;

/**
 * IEEE 754 binary16 ("half", torch.float16) to and from float32, bit for bit as numpy and torch convert.
 *
 * <p>Java 17 has no {@code Float.float16ToFloat} (it arrived in Java 20), so the conversion is written out here.
 * Float32 to float16 rounds to nearest, ties to even, including into and out of the subnormal range;
 * magnitudes from 65520 up overflow to infinity, as numpy's {@code astype(np.float16)} does.
 */
public final class Float16 {
    private Float16() {
    }

    /** Widens a binary16 bit pattern to the float32 of exactly the same value (NaN payloads kept). */
    public static float toFloat(short half) {
        int bits = half & 0xffff;
        int sign = (bits & 0x8000) << 16;
        int exponent = (bits >>> 10) & 0x1f;
        int mantissa = bits & 0x3ff;
        if (exponent == 0x1f) {
            return Float.intBitsToFloat(sign | 0x7f800000 | (mantissa << 13));
        }
        if (exponent == 0) {
            // Zero or subnormal: the value is mantissa * 2^-24, exact in float32.
            float magnitude = mantissa * 0x1p-24f;
            return sign == 0 ? magnitude : -magnitude;
        }
        // Rebias the exponent from 15 to 127.
        return Float.intBitsToFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
    }

    /** Narrows a float32 to binary16, rounding to nearest even. NaN stays NaN (quiet), overflow gives infinity. */
    public static short fromFloat(float value) {
        int bits = Float.floatToRawIntBits(value);
        int sign = (bits >>> 16) & 0x8000;
        int magnitude = bits & 0x7fffffff;
        if (magnitude >= 0x7f800000) {
            if (magnitude == 0x7f800000) {
                return (short) (sign | 0x7c00);
            }
            // Keep the top payload bits and set the quiet bit, so a NaN whose payload lives only in the low
            // 13 bits does not turn into infinity.
            return (short) (sign | 0x7e00 | ((magnitude >>> 13) & 0x3ff));
        }
        int exponent = magnitude >>> 23;
        if (exponent >= 143) {
            // 2^16 and above: past the largest finite half even before rounding.
            return (short) (sign | 0x7c00);
        }
        if (exponent >= 113) {
            // Normal half range [2^-14, 2^16). Rounding may carry into the exponent, up to infinity (0x7c00),
            // which is the correct result for [65520, 65536).
            int half = ((exponent - 112) << 10) | ((magnitude >>> 13) & 0x3ff);
            return (short) (sign | roundShifted(half, magnitude & 0x1fff, 13));
        }
        if (exponent >= 102) {
            // Subnormal half: value / 2^-24 = significand * 2^(exponent - 126). At exponent 102 (values in
            // [2^-25, 2^-24)) all of the significand lies below the kept bits, and only the round bit decides.
            int significand = (magnitude & 0x7fffff) | 0x800000;
            int shift = 126 - exponent;
            int kept = significand >>> shift;
            return (short) (sign | roundShifted(kept, significand & ((1 << shift) - 1), shift));
        }
        // Below 2^-25: rounds to zero (signed).
        return (short) sign;
    }

    /** Rounds {@code kept} up by one when the {@code shift} discarded bits are above half, or exactly half and kept is odd. */
    private static int roundShifted(int kept, int discarded, int shift) {
        int halfway = 1 << (shift - 1);
        if (discarded > halfway || (discarded == halfway && (kept & 1) != 0)) {
            return kept + 1;
        }
        return kept;
    }
}
