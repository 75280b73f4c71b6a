package io.mixtune.lora.nf4;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Hand-computed cases; byte-for-byte parity with bitsandbytes itself is in Nf4BitsandbytesGoldenTest. */
class Nf4TensorTest {

    @Test
    void levelsTimesAbsmaxRoundTripExactly() {
        float[] values = new float[64];
        for (int i = 0; i < 64; i++) {
            values[i] = Nf4Tensor.LEVELS[i % 16] * 2f; // absmax 2, every level present
        }
        Nf4Tensor nf4 = Nf4Tensor.quantize(values, new long[] {4, 16}, false);
        assertArrayEquals(new float[] {2f}, nf4.blockAbsmax());
        assertArrayEquals(values, nf4.dequantize());
        byte[] packed = nf4.packed();
        assertEquals(32, packed.length);
        assertEquals((byte) 0x01, packed[0], "codes 0 and 1, the first in the high nibble");
        assertEquals((byte) 0xEF, packed[7]);
    }

    @Test
    void aValueHalfwayBetweenTwoLevelsTakesTheLowerOne() {
        float halfway = (Nf4Tensor.LEVELS[9] + Nf4Tensor.LEVELS[10]) / 2f;
        Nf4Tensor nf4 = Nf4Tensor.quantize(new float[] {1f, halfway}, new long[] {2}, false);
        assertEquals((byte) 0xF9, nf4.packed()[0]);
        float above = Math.nextUp(halfway);
        assertEquals((byte) 0xFA, Nf4Tensor.quantize(new float[] {1f, above}, new long[] {2}, false).packed()[0]);
    }

    @Test
    void anOddCountIsPaddedWithTheCodeOfZeroAndAZeroBlockStaysZero() {
        Nf4Tensor nf4 = Nf4Tensor.quantize(new float[] {0f, 0f, 0f}, new long[] {3}, false);
        assertArrayEquals(new byte[] {0x77, 0x77}, nf4.packed());
        assertArrayEquals(new float[] {0f, 0f, 0f}, nf4.dequantize());
    }

    @Test
    void theLastPartialBlockHasItsOwnAbsmax() {
        float[] values = new float[70];
        values[3] = -4f;
        values[66] = 0.5f;
        Nf4Tensor nf4 = Nf4Tensor.quantize(values, new long[] {7, 10}, false);
        assertArrayEquals(new float[] {4f, 0.5f}, nf4.blockAbsmax());
        assertEquals(-4f, nf4.dequantize()[3]);
        assertEquals(0.5f, nf4.dequantize()[66]);
    }

    @Test
    void doubleQuantizationKeepsAbsmaxCloseAndCostsAbout4Point13Bits() {
        SplittableRandom random = new SplittableRandom(5);
        int rows = 512;
        int cols = 512;
        float[] values = new float[rows * cols];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (random.nextGaussian() * 0.02);
        }
        Nf4Tensor plain = Nf4Tensor.quantize(values, new long[] {rows, cols}, false);
        Nf4Tensor nested = Nf4Tensor.quantize(values, new long[] {rows, cols}, true);
        assertArrayEquals(plain.packed(), nested.packed(), "the codes do not depend on how absmax is stored");
        float[] exact = plain.blockAbsmax();
        float[] approximate = nested.blockAbsmax();
        double worst = 0;
        for (int i = 0; i < exact.length; i++) {
            worst = Math.max(worst, Math.abs(exact[i] - approximate[i]) / exact[i]);
        }
        assertTrue(worst < 0.01, "double-quantized absmax off by " + worst + " relative");
        double bitsPerWeight = 8.0 * nested.storageBytes() / values.length;
        assertEquals(4.127, bitsPerWeight, 0.001);
    }
}
