package io.mixtune.lora.init;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import java.util.random.RandomGenerator;
import org.apache.commons.math3.linear.Array2DRowRealMatrix;
import org.apache.commons.math3.linear.RealMatrix;
import org.apache.commons.math3.linear.SingularValueDecomposition;

/**
 * The top singular triplets of a weight W [m, n], for PiSSA: exact (commons-math3's SVD, Golub-Kahan as LAPACK's) for
 * the matrices a full SVD in Java does in seconds, else Halko et al. 2009's randomized subspace iteration (torch's
 * svd_lowrank, _lowrank.py), whose big products x W and x W^T are DJL matmuls on W's device and whose small QRs
 * ({@link ThinQr}) and SVD run here.
 *
 * <p>Singular vectors are defined up to a sign per triplet; LAPACK's gesdd (torch.linalg.svd) and commons-math3 may
 * pick different ones. PiSSA's update B A, and so the residual W - scale B A and the converted adapter's product,
 * do not depend on it.
 */
public final class LowRankSvd {
    /**
     * The largest min(m, n) for which "pissa" runs the exact SVD (commons-math3, O(m n min(m, n)): measured 104 s for
     * 1024 x 1024 on the loaded 2-core development machine, 3 s for 512 and for 256); above it the subspace iteration
     * runs until the rank-r product stops moving ({@link #converged}).
     */
    public static final int EXACT_MAX_DIM = 256;
    /**
     * When the subspace iteration has converged: the rank-r product of two successive iterations differs by less than
     * this of its norm (relative Frobenius), about ten float32 roundings.
     */
    static final double CONVERGED = 1e-6;
    static final int MAX_ITERATIONS = 100;

    private LowRankSvd() {}

    /**
     * u[j] (length m) and v[j] (length n) the j-th left and right singular vectors, s[j] its singular value,
     * largest first.
     */
    public record Triplets(double[][] u, double[] s, double[][] v) {
        Triplets top(int r) {
            return new Triplets(java.util.Arrays.copyOf(u, r), java.util.Arrays.copyOf(s, r),
                    java.util.Arrays.copyOf(v, r));
        }
    }

    /** The top r triplets of the full SVD (PEFT's pissa: torch.linalg.svd(W, full_matrices=False)). */
    public static Triplets exact(float[] w, int m, int n, int r) {
        double[][] rows = new double[m][n];
        for (int i = 0; i < m; i++) {
            for (int c = 0; c < n; c++) {
                rows[i][c] = w[i * n + c];
            }
        }
        SingularValueDecomposition svd = new SingularValueDecomposition(new Array2DRowRealMatrix(rows, false));
        RealMatrix u = svd.getU();
        RealMatrix v = svd.getV();
        double[][] us = new double[r][];
        double[][] vs = new double[r][];
        for (int j = 0; j < r; j++) {
            us[j] = u.getColumn(j);
            vs[j] = v.getColumn(j);
        }
        return new Triplets(us, java.util.Arrays.copyOf(svd.getSingularValues(), r), vs);
    }

    /**
     * torch.svd_lowrank(W, q, niter) (Halko et al.'s algorithm 5.1 with niter power iterations, each orthonormalised
     * by QR), with its random start drawn from {@code random} instead of torch's global generator.
     */
    public static Triplets halko(NDArray w, int q, int niter, RandomGenerator random) {
        return iterate(w, q, niter, random, false, q, false).top(q);
    }

    /**
     * The top r triplets by subspace iteration on q = min(2r + 8, min(m, n)) columns (the r + 8 extra columns make
     * the error shrink as (s_q+1 / s_r)^2 per iteration, not (s_r+1 / s_r)^2), until the rank-r product U_r S_r V_r^T
     * stops moving ({@value #CONVERGED} of its norm between two iterations); refused after {@value #MAX_ITERATIONS}
     * iterations without settling.
     */
    public static Triplets converged(NDArray w, int r, RandomGenerator random) {
        return converged(w, r, random, true);
    }

    /**
     * As above; with {@code refuseUnsettled} false the iterate after {@value #MAX_ITERATIONS} iterations is returned
     * instead: LoftQ's quantisation error is close to white noise, whose top-r subspace is barely defined (any
     * nearly-top one leaves nearly the same error), where PiSSA's start is that subspace.
     */
    public static Triplets converged(NDArray w, int r, RandomGenerator random, boolean refuseUnsettled) {
        long[] shape = w.getShape().getShape();
        int q = (int) Math.min(2L * r + 8, Math.min(shape[0], shape[1]));
        return iterate(w, q, MAX_ITERATIONS, random, true, r, refuseUnsettled).top(r);
    }

    /** @param r with untilConverged, the rank whose product must settle */
    private static Triplets iterate(NDArray weight, int q, int niter, RandomGenerator random, boolean untilConverged,
            int r, boolean refuseUnsettled) {
        long[] shape = weight.getShape().getShape();
        boolean transposed = shape[0] < shape[1]; // _svd_lowrank assumes a tall matrix
        try (NDManager scratch = weight.getManager().newSubManager()) {
            NDArray a = weight;
            if (transposed) {
                a = weight.transpose();
                a.attach(scratch);
            }
            int m = (int) a.getShape().get(0);
            int n = (int) a.getShape().get(1);
            NDArray at = a.transpose();
            at.attach(scratch);
            float[] start = new float[n * q];
            for (int i = 0; i < start.length; i++) {
                start[i] = (float) random.nextGaussian();
            }
            NDArray basis = orthonormal(a.matMul(scratch.create(start, new Shape(n, q))), scratch);
            Triplets previous = null;
            double moved = Double.NaN;
            for (int i = 0; i < niter; i++) {
                basis = orthonormal(at.matMul(basis), scratch);
                basis = orthonormal(a.matMul(basis), scratch);
                if (untilConverged) {
                    Triplets now = project(a, basis, q, m, scratch);
                    if (previous != null) {
                        moved = relativeChange(previous, now, r);
                        if (moved <= CONVERGED) {
                            return oriented(now, transposed);
                        }
                    }
                    previous = now;
                }
            }
            if (untilConverged && refuseUnsettled) {
                // Returning the last iterate would hand PiSSA a start that is not the top-r SVD it promises.
                throw new IllegalArgumentException("pissa: the subspace iteration on a " + shape[0] + " x " + shape[1]
                        + " weight did not settle within " + niter + " iterations (its rank-" + r + " product still "
                        + "moved by " + String.format(java.util.Locale.ROOT, "%.1e", moved) + " of its norm, more than "
                        + CONVERGED + "): its top " + r + " singular values are too close to those below them for "
                        + "the exact start to be well defined; set lora.init_lora_weights: pissa_niter_N (torch's "
                        + "svd_lowrank with N iterations, PEFT's fast PiSSA) or olora");
            }
            return oriented(project(a, basis, q, m, scratch), transposed);
        }
    }

    /**
     * ||P - P'|| / ||P'|| for the rank-r approximations P = U_r S_r V_r^T of two iterations: the product, not each
     * vector, since vectors of nearly equal singular values turn within their span from one iteration to the next
     * while B A stays put. ||P - P'||^2 = <P, P> + <P', P'> - 2 <P, P'>, with
     * <X, Y> = sum_jk s_j t_k (u_j . y_k)(v_j . z_k) and every term from the vectors as they are: U comes from a
     * float32 basis, so its columns are unit only to about 1e-8, and sum s_j^2 in place of <P, P> would err by that
     * much of ||P||^2, more than the (1e-6)^2 tested.
     */
    static double relativeChange(Triplets before, Triplets now, int r) {
        double normBefore = inner(before, before, r);
        double normNow = inner(now, now, r);
        double difference = Math.max(0, normBefore + normNow - 2 * inner(before, now, r));
        return Math.sqrt(difference / normNow);
    }

    private static double inner(Triplets x, Triplets y, int r) {
        double sum = 0;
        for (int j = 0; j < r; j++) {
            for (int k = 0; k < r; k++) {
                sum += x.s()[j] * y.s()[k] * dot(x.u()[j], y.u()[k]) * dot(x.v()[j], y.v()[k]);
            }
        }
        return sum;
    }

    private static double dot(double[] x, double[] y) {
        double sum = 0;
        for (int i = 0; i < x.length; i++) {
            sum += x[i] * y[i];
        }
        return sum;
    }

    private static Triplets oriented(Triplets t, boolean transposed) {
        return transposed ? new Triplets(t.v(), t.s(), t.u()) : t;
    }

    /**
     * B = Q^T A, its SVD U S V^T, and Q U: torch.svd_lowrank's last step. The SVD of the wide q x n matrix B goes
     * through the QR of B^T = Q2 R2 and the SVD of the q x q R2^T = U S W^T (then V = Q2 W): commons-math3 takes about
     * 0.1 s for a 40 x 256 SVD, a hundred times the QR and the small SVD together.
     */
    private static Triplets project(NDArray a, NDArray basis, int q, int m, NDManager scratch) {
        NDArray small = basis.transpose().matMul(a);
        small.attach(scratch);
        int n = (int) small.getShape().get(1);
        float[] b = small.toFloatArray();
        double[][] rowsOfB = new double[q][n];
        for (int i = 0; i < q; i++) {
            for (int c = 0; c < n; c++) {
                rowsOfB[i][c] = b[i * n + c];
            }
        }
        ThinQr.Result qr = ThinQr.of(rowsOfB); // the columns of B^T are B's rows
        double[][] rt = new double[q][q];
        for (int i = 0; i < q; i++) {
            for (int j = 0; j < q; j++) {
                rt[i][j] = qr.r()[j][i];
            }
        }
        SingularValueDecomposition svd = new SingularValueDecomposition(new Array2DRowRealMatrix(rt, false));
        float[] qs = basis.toFloatArray();
        RealMatrix u = svd.getU();
        RealMatrix w = svd.getV();
        double[][] us = new double[q][m];
        double[][] vs = new double[q][n];
        for (int j = 0; j < q; j++) {
            double[] smallU = u.getColumn(j);
            for (int i = 0; i < m; i++) {
                double sum = 0;
                for (int k = 0; k < q; k++) {
                    sum += qs[i * q + k] * smallU[k];
                }
                us[j][i] = sum;
            }
            double[] smallW = w.getColumn(j);
            for (int k = 0; k < q; k++) {
                double coefficient = smallW[k];
                double[] column = qr.q()[k];
                for (int c = 0; c < n; c++) {
                    vs[j][c] += coefficient * column[c];
                }
            }
        }
        return new Triplets(us, svd.getSingularValues(), vs);
    }

    /** Q of X's thin QR (torch.linalg.qr(X).Q), as a float32 array like X. */
    private static NDArray orthonormal(NDArray x, NDManager scratch) {
        x.attach(scratch);
        int m = (int) x.getShape().get(0);
        int q = (int) x.getShape().get(1);
        float[] values = x.toFloatArray();
        double[][] columns = new double[q][m];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < q; j++) {
                columns[j][i] = values[i * q + j];
            }
        }
        double[][] basis = ThinQr.of(columns).q();
        float[] out = new float[m * q];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < q; j++) {
                out[i * q + j] = (float) basis[j][i];
            }
        }
        NDArray result = scratch.create(out, new Shape(m, q));
        return result.toDevice(x.getDevice(), false);
    }
}
