package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;

/** The QR + small-SVD truncation of B A against the product itself and the Eckart-Young error. */
class LowRankCompressionTest {

    private static float[] random(int n, long seed) {
        Random random = new Random(seed);
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) random.nextGaussian();
        }
        return x;
    }

    private static double frobenius(float[] x) {
        double s = 0;
        for (float v : x) {
            s += (double) v * v;
        }
        return Math.sqrt(s);
    }

    @Test
    void keepingTheFullRankReproducesTheProduct() {
        int out = 12;
        int in = 20;
        int r = 5;
        float[] b = random(out * r, 1);
        float[] a = random(r * in, 2);
        LowRankCompression.Result full = LowRankCompression.truncate(b, a, out, in, r, 8);
        assertEquals(5, full.rank());
        float[] expected = MergeGoldenTest.product(b, a, out, r, in, 1);
        float[] actual = MergeGoldenTest.product(full.b(), full.a(), out, full.rank(), in, 1);
        for (int i = 0; i < expected.length; i++) {
            assertEquals(expected[i], actual[i], 1e-4, "entry " + i);
        }
        assertEquals(0, full.relativeError(), 1e-7);
    }

    @Test
    void truncationErrorIsTheDroppedSingularValuesAndIsWhatItReports() {
        int out = 16;
        int in = 9;
        int r = 7;
        float[] b = random(out * r, 3);
        float[] a = random(r * in, 4);
        LowRankCompression.Result cut = LowRankCompression.truncate(b, a, out, in, r, 3);
        assertEquals(3, cut.rank());
        float[] product = MergeGoldenTest.product(b, a, out, r, in, 1);
        float[] approx = MergeGoldenTest.product(cut.b(), cut.a(), out, 3, in, 1);
        float[] residual = new float[product.length];
        for (int i = 0; i < product.length; i++) {
            residual[i] = product[i] - approx[i];
        }
        double measured = frobenius(residual) / frobenius(product);
        assertEquals(measured, cut.relativeError(), 1e-5, "reported error = measured error");
        assertTrue(cut.relativeError() > 0.05, "rank 7 -> 3 of random factors loses something");
        // Eckart-Young: no rank-3 approximation does better, e.g. the first three ranks of B A as given.
        float[] naive = MergeGoldenTest.product(firstColumns(b, out, r, 3), java.util.Arrays.copyOf(a, 3 * in), out, 3,
                in, 1);
        for (int i = 0; i < product.length; i++) {
            residual[i] = product[i] - naive[i];
        }
        assertTrue(frobenius(residual) / frobenius(product) >= cut.relativeError());
    }

    @Test
    void aZeroProductHasZeroErrorAndWideFactorsWork() {
        LowRankCompression.Result zero = LowRankCompression.truncate(new float[4 * 6], random(6 * 3, 5), 4, 3, 6, 2);
        assertEquals(0, zero.relativeError());
        // rank 6 exceeds both out = 4 and in = 3: the product has rank at most 3.
        LowRankCompression.Result wide = LowRankCompression.truncate(random(4 * 6, 6), random(6 * 3, 7), 4, 3, 6, 3);
        assertEquals(0, wide.relativeError(), 1e-7);
    }

    private static float[] firstColumns(float[] b, int rows, int r, int k) {
        float[] out = new float[rows * k];
        for (int i = 0; i < rows; i++) {
            System.arraycopy(b, i * r, out, i * k, k);
        }
        return out;
    }
}
