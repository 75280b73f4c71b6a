package io.mixtune.lora.init;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import io.mixtune.lora.adapter.LoraInit;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The linear algebra behind PiSSA and OLoRA: the thin QR has LAPACK's signs (torch.linalg.qr's values, float64, for a
 * 3 x 2 matrix); the subspace iteration that "pissa" runs on large weights finds the top singular triplets of a matrix
 * whose SVD is known by construction; every start, exact or randomized, leaves residual + scale B0 A0 = W.
 */
class LowRankSvdTest {
    @Test
    void thinQrHasLapacksSigns() {
        ThinQr.Result qr = ThinQr.of(new double[][] {{1, 3, 5}, {2, 4, 6}});
        // torch.linalg.qr(torch.tensor([[1., 2], [3, 4], [5, 6]], dtype=torch.float64))
        assertArrayEquals(new double[] {-0.16903085094570325, -0.50709255283711, -0.8451542547285166}, qr.q()[0], 1e-14);
        assertArrayEquals(new double[] {0.8970852271450607, 0.27602622373694136, -0.34503277967117696}, qr.q()[1],
                1e-14);
        assertArrayEquals(new double[] {-5.916079783099615, -7.437357441610946}, qr.r()[0], 1e-13);
        assertArrayEquals(new double[] {0, 0.828078671210825}, qr.r()[1], 1e-13);
    }

    @Test
    void subspaceIterationFindsAKnownSvd() {
        int m = 300;
        int n = 280;
        int r = 6;
        SplittableRandom random = new SplittableRandom(3);
        double[][] u = ThinQr.of(gaussian(random, 40, m)).q();
        double[][] v = ThinQr.of(gaussian(random, 40, n)).q();
        float[] w = new float[m * n];
        double[] s = new double[40];
        for (int k = 0; k < 40; k++) {
            s[k] = 1.0 / (1 + k);
            for (int i = 0; i < m; i++) {
                for (int c = 0; c < n; c++) {
                    w[i * n + c] += (float) (s[k] * u[k][i] * v[k][c]);
                }
            }
        }
        try (NDManager manager = NDManager.newBaseManager()) {
            LowRankSvd.Triplets top = LowRankSvd.converged(manager.create(w, new Shape(m, n)), r,
                    new SplittableRandom(1));
            for (int j = 0; j < r; j++) {
                assertEquals(s[j], top.s()[j], 1e-6, "s_" + j);
                assertEquals(1, Math.abs(dot(u[j], top.u()[j])), 1e-6, "u_" + j);
                assertEquals(1, Math.abs(dot(v[j], top.v()[j])), 1e-6, "v_" + j);
            }
        }
    }

    @Test
    void convergenceMeasuresTheProductsDifferenceNotUnitNorms() {
        // P' = (1 + 1e-5) P moved by 1e-5 of its norm, ten times the criterion. Taking <P, P> as sum s_j^2 (unit
        // vectors assumed) made the difference 10 - 10 (1 + 1e-5) < 0, clamped to 0: "settled". A float32 basis
        // leaves U's columns unit only to about 1e-8, so that criterion stopped near 1e-4, not 1e-6.
        double[][] v = {{1, 0}, {0, 1}};
        double[] s = {2, 1};
        LowRankSvd.Triplets before = new LowRankSvd.Triplets(new double[][] {{1, 0, 0}, {0, 1, 0}}, s, v);
        LowRankSvd.Triplets grown = new LowRankSvd.Triplets(new double[][] {{1 + 1e-5, 0, 0}, {0, 1 + 1e-5, 0}}, s, v);
        assertEquals(1e-5, LowRankSvd.relativeChange(before, grown, 2), 1e-7);
        assertEquals(0, LowRankSvd.relativeChange(before, before, 2), 1e-9);
    }

    @Test
    void subspaceIterationThatDoesNotSettleIsRefusedByName() {
        // s_k = 1 - 0.001 k: with r 2 and q 12 columns the error shrinks by (s_13 / s_2)^2 = 0.98 per iteration, so
        // 100 iterations do not get the product to 1e-6; the last iterate used to be returned as if converged.
        int m = 200;
        int n = 180;
        SplittableRandom random = new SplittableRandom(7);
        double[][] u = ThinQr.of(gaussian(random, 60, m)).q();
        double[][] v = ThinQr.of(gaussian(random, 60, n)).q();
        float[] w = new float[m * n];
        for (int k = 0; k < 60; k++) {
            double s = 1 - 0.001 * k;
            for (int i = 0; i < m; i++) {
                for (int c = 0; c < n; c++) {
                    w[i * n + c] += (float) (s * u[k][i] * v[k][c]);
                }
            }
        }
        try (NDManager manager = NDManager.newBaseManager()) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> LowRankSvd.converged(manager.create(w, new Shape(m, n)), 2, new SplittableRandom(1)));
            assertTrue(e.getMessage().contains("did not settle within 100 iterations")
                    && e.getMessage().contains("pissa_niter_N"), e.getMessage());
        }
    }

    @Test
    void everyStartLeavesTheWeightItTookApart() {
        int out = 40;
        int in = 24;
        SplittableRandom random = new SplittableRandom(5);
        float[] w = new float[out * in];
        for (int i = 0; i < w.length; i++) {
            w[i] = (float) random.nextGaussian();
        }
        try (NDManager manager = NDManager.newBaseManager()) {
            for (String init : new String[] {"pissa", "pissa_niter_0", "pissa_niter_2", "olora"}) {
                double scale = 2.5;
                MutatedInit.Factors f = MutatedInit.factors(LoraInit.parse(init), w, out, in, 4, scale,
                        new SplittableRandom(1), manager);
                float[] residual = MutatedInit.residual(w, out, in, f, scale, manager);
                for (int i = 0; i < out; i++) {
                    for (int c = 0; c < in; c++) {
                        double update = 0;
                        for (int k = 0; k < 4; k++) {
                            update += f.b()[i * 4 + k] * f.a()[k * in + c];
                        }
                        assertEquals(w[i * in + c], residual[i * in + c] + scale * update, 1e-5, init);
                    }
                }
                if (init.startsWith("pissa")) {
                    // scale B0 A0 is a rank-4 approximation of W (OLoRA's is scale times a projection of it)
                    assertTrue(norm(residual) < norm(w), init + ": the start took nothing out");
                }
            }
        }
    }

    private static double[][] gaussian(SplittableRandom random, int columns, int rows) {
        double[][] values = new double[columns][rows];
        for (double[] column : values) {
            for (int i = 0; i < rows; i++) {
                column[i] = random.nextGaussian();
            }
        }
        return values;
    }

    private static double dot(double[] x, double[] y) {
        double sum = 0;
        for (int i = 0; i < x.length; i++) {
            sum += x[i] * y[i];
        }
        return sum;
    }

    private static double norm(float[] values) {
        double sum = 0;
        for (float v : values) {
            sum += v * v;
        }
        return Math.sqrt(sum);
    }
}
