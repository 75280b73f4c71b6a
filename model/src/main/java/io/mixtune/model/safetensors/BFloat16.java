package io.mixtune.model.safetensors;

/**
 * bfloat16 (torch.bfloat16) to and from float32. A bfloat16 is the top 16 bits of a float32, so widening is a
 * shift; narrowing rounds to nearest even on the dropped 16 bits, as torch and numpy's ml_dtypes do.
 */
public final class BFloat16 {
    private BFloat16() {
    }

    /** Widens a bfloat16 bit pattern to the float32 of the same value. */
    public static float toFloat(short bf16) {
        return Float.intBitsToFloat((bf16 & 0xffff) << 16);
    }

    /** Narrows a float32 to bfloat16, rounding to nearest even; overflow gives infinity, NaN stays a quiet NaN. */
    public static short fromFloat(float value) {
        int bits = Float.floatToRawIntBits(value);
        if ((bits & 0x7fffffff) > 0x7f800000) {
            // The rounding add below would carry a NaN whose payload is only in the low half into infinity.
            return (short) ((bits >>> 16) | 0x0040);
        }
        int keptLowestBit = (bits >>> 16) & 1;
        return (short) ((bits + 0x7fff + keptLowestBit) >>> 16);
    }
}
