package io.mixtune.model.safetensors;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Float16 and BFloat16 against numpy's conversions (the hex constants below were printed by
 * {@code np.array([x], np.float32).astype(np.float16).view(np.uint16)}) and against round-to-nearest-even
 * computed independently in double precision.
 */
class SafetensorsDTypeConversionTest {

    private static void assertHalf(int expectedBits, float value) {
        assertEquals(expectedBits, Float16.fromFloat(value) & 0xffff,
                () -> "f16 of " + value + " expected 0x" + Integer.toHexString(expectedBits)
                        + " got 0x" + Integer.toHexString(Float16.fromFloat(value) & 0xffff));
    }

    private static void assertBf16(int expectedBits, float value) {
        assertEquals(expectedBits, BFloat16.fromFloat(value) & 0xffff,
                () -> "bf16 of " + value + " expected 0x" + Integer.toHexString(expectedBits)
                        + " got 0x" + Integer.toHexString(BFloat16.fromFloat(value) & 0xffff));
    }

    @Test
    void float16MatchesNumpyOnHandPickedValues() {
        assertHalf(0x3c00, 1.0f);
        assertHalf(0xc100, -2.5f);
        assertHalf(0x7bff, 65504f);
        assertHalf(0x7bff, 65519f);
        assertHalf(0x7c00, 65520f); // halfway to 65536 ties to the even side, which is infinity
        assertHalf(0x0002, 1e-7f); // subnormal: 1e-7 / 2^-24 = 1.68 rounds to 2
        assertHalf(0x0001, 0x1p-24f); // smallest subnormal
        assertHalf(0x0000, 0x1p-25f); // halfway to the smallest subnormal ties to zero
        assertHalf(0x0001, Math.nextUp(0x1p-25f));
        assertHalf(0x0000, 1e-8f);
        assertHalf(0x3c00, 1 + 0x1p-11f); // tie between 1 and 1+2^-10 goes to even 1
        assertHalf(0x3c02, 1 + 3 * 0x1p-11f); // tie goes up to even 1+2^-9
        assertHalf(0x03ff, 6.1e-5f);
        assertHalf(0x0400, 0x1p-14f - 0x1p-25f); // largest subnormal rounds up into the smallest normal
        assertHalf(0x7c00, Float.POSITIVE_INFINITY);
        assertHalf(0xfc00, Float.NEGATIVE_INFINITY);
        assertHalf(0x7c00, Float.MAX_VALUE);
        assertHalf(0x7e00, Float.NaN);
        assertHalf(0x8000, -0.0f);
        assertTrue(Float.isNaN(Float16.toFloat(Float16.fromFloat(Float.intBitsToFloat(0x7f800001)))),
                "a NaN with payload only in the low bits must stay NaN, not become infinity");
    }

    @Test
    void float16DecodesHandPickedValues() {
        assertEquals(1.0f, Float16.toFloat((short) 0x3c00));
        assertEquals(-2.5f, Float16.toFloat((short) 0xc100));
        assertEquals(65504f, Float16.toFloat((short) 0x7bff));
        assertEquals(0x1p-24f, Float16.toFloat((short) 0x0001));
        assertEquals(0x1p-23f, Float16.toFloat((short) 0x0002));
        assertEquals(0x1p-14f, Float16.toFloat((short) 0x0400));
        assertEquals(Float.POSITIVE_INFINITY, Float16.toFloat((short) 0x7c00));
        assertEquals(Float.NEGATIVE_INFINITY, Float16.toFloat((short) 0xfc00));
        assertTrue(Float.isNaN(Float16.toFloat((short) 0x7e00)));
        assertTrue(Float.isNaN(Float16.toFloat((short) 0x7c01)));
        assertEquals(Float.floatToRawIntBits(-0.0f), Float.floatToRawIntBits(Float16.toFloat((short) 0x8000)));
    }

    /** Every one of the 65536 patterns against the binary16 definition, and back to the same bits. */
    @Test
    void float16DecodesEveryPatternByDefinitionAndRoundTrips() {
        for (int bits = 0; bits < 0x10000; bits++) {
            int sign = bits >>> 15;
            int exponent = (bits >>> 10) & 0x1f;
            int mantissa = bits & 0x3ff;
            float decoded = Float16.toFloat((short) bits);
            if (exponent == 0x1f) {
                assertTrue(mantissa == 0 ? Float.isInfinite(decoded) : Float.isNaN(decoded));
                if (mantissa != 0) {
                    assertTrue(Float.isNaN(Float16.toFloat(Float16.fromFloat(decoded))));
                    continue;
                }
            } else {
                double magnitude = exponent == 0
                        ? Math.scalb((double) mantissa, -24)
                        : Math.scalb(1.0 + mantissa / 1024.0, exponent - 15);
                assertEquals(sign == 1 ? -magnitude : magnitude, decoded, 0.0, "pattern 0x" + Integer.toHexString(bits));
            }
            assertEquals(Float.floatToRawIntBits(decoded) >>> 31, sign);
            assertEquals(bits, Float16.fromFloat(decoded) & 0xffff, "pattern 0x" + Integer.toHexString(bits));
        }
    }

    /** Round to nearest even, decided in double arithmetic over the ordered finite halves. */
    @Test
    void float16RoundsToNearestEvenOnRandomFloats() {
        Random random = new Random(7);
        for (int i = 0; i < 200_000; i++) {
            // Exponents 95..145 cover below-subnormal, subnormal, normal and overflow.
            int exponent = 95 + random.nextInt(51);
            float value = Float.intBitsToFloat((random.nextBoolean() ? 0x80000000 : 0)
                    | (exponent << 23) | random.nextInt(1 << 23));
            assertEquals(referenceHalf(value), Float16.fromFloat(value) & 0xffff, "value " + value);
        }
    }

    private static int referenceHalf(float value) {
        double magnitude = Math.abs((double) value);
        int sign = value < 0 ? 0x8000 : 0;
        // Largest non-negative finite half not above the magnitude; 0x7bff is the largest finite.
        int low = 0;
        int high = 0x7bff;
        while (low < high) {
            int mid = (low + high + 1) >>> 1;
            if (halfValue(mid) <= magnitude) {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        // Above 0x7bff IEEE rounds as if the exponent were unbounded: the next value is 2^16, encoded as infinity.
        double below = halfValue(low);
        double above = low == 0x7bff ? 65536.0 : halfValue(low + 1);
        int chosen;
        if (magnitude - below < above - magnitude) {
            chosen = low;
        } else if (magnitude - below > above - magnitude) {
            chosen = low + 1;
        } else {
            chosen = (low & 1) == 0 ? low : low + 1;
        }
        return sign | chosen;
    }

    private static double halfValue(int bits) {
        int exponent = bits >>> 10;
        int mantissa = bits & 0x3ff;
        return exponent == 0 ? Math.scalb((double) mantissa, -24) : Math.scalb(1.0 + mantissa / 1024.0, exponent - 15);
    }

    @Test
    void bfloat16MatchesHandPickedValues() {
        assertBf16(0x3f80, 1.0f);
        assertBf16(0xc020, -2.5f);
        assertBf16(0x3f80, Float.intBitsToFloat(0x3f808000)); // 1 + 2^-8: tie, stays on even 0x3f80
        assertBf16(0x3f82, Float.intBitsToFloat(0x3f818000)); // 1 + 3 * 2^-8: tie, goes up to even 0x3f82
        assertBf16(0x3f81, Float.intBitsToFloat(0x3f808001)); // just above the tie
        assertBf16(0x4780, 65504f); // 0x477fe000 rounds up to 65536
        assertBf16(0x7f80, Float.MAX_VALUE); // overflow to infinity
        assertBf16(0x7f80, Float.POSITIVE_INFINITY);
        assertBf16(0xff80, Float.NEGATIVE_INFINITY);
        assertBf16(0x7fc0, Float.NaN);
        assertEquals(1.0f, BFloat16.toFloat((short) 0x3f80));
        assertEquals(-2.5f, BFloat16.toFloat((short) 0xc020));
        // Signalling NaNs with payload only in the low half: naive rounding would give infinity.
        float signalling = Float.intBitsToFloat(0x7f800001);
        assertTrue(Float.isNaN(BFloat16.toFloat(BFloat16.fromFloat(signalling))));
        short negative = BFloat16.fromFloat(Float.intBitsToFloat(0xff800001));
        assertTrue(Float.isNaN(BFloat16.toFloat(negative)));
        assertEquals(0x8000, negative & 0x8000, "NaN keeps its sign");
    }

    @Test
    void bfloat16RoundsToNearestEvenOnRandomFloats() {
        Random random = new Random(11);
        for (int i = 0; i < 200_000; i++) {
            float value = Float.intBitsToFloat(random.nextInt());
            if (Float.isNaN(value) || Float.isInfinite(value)) {
                continue;
            }
            int bits = Float.floatToRawIntBits(value);
            int truncated = bits & 0xffff0000;
            double below = Float.intBitsToFloat(truncated);
            float next = Float.intBitsToFloat(truncated + 0x10000);
            // Past the largest finite bfloat16, IEEE rounds as if the exponent continued: the next step is 2^128.
            double above = Float.isFinite(next) ? next : Math.copySign(Math.scalb(1.0, 128), value);
            double distanceBelow = Math.abs(value - below);
            double distanceAbove = Math.abs(above - value);
            int expected;
            if (distanceBelow < distanceAbove) {
                expected = truncated >>> 16;
            } else if (distanceBelow > distanceAbove) {
                expected = (truncated + 0x10000) >>> 16;
            } else {
                expected = ((truncated >>> 16) & 1) == 0 ? truncated >>> 16 : (truncated + 0x10000) >>> 16;
            }
            assertEquals(expected & 0xffff, BFloat16.fromFloat(value) & 0xffff, "value " + value);
        }
    }

    @Test
    void headerNamesParseToDTypes() {
        assertEquals(DType.BF16, DType.fromHeaderName("BF16").orElseThrow());
        assertEquals(8, DType.I64.byteSize());
        assertEquals(2, DType.F16.byteSize());
        assertTrue(DType.fromHeaderName("bf16").isEmpty(), "header names are upper case in the format");
        assertTrue(DType.fromHeaderName("Q4").isEmpty());
    }
}
