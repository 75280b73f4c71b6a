package io.mixtune.lora.init;

/**
 * The thin QR factorisation of an m x k matrix (m >= k) by Householder reflections, with LAPACK's conventions so
 * that Q and R are the ones torch.linalg.qr gives on the CPU (geqrf, then orgqr for Q): reflector j maps column j's
 * tail to beta e_j with beta = -sign(a_jj) ||a_j|| (dlarfg), so R's diagonal has the opposite sign of the pivot it
 * replaces, and a zero tail leaves the column as it is (tau 0).
 *
 * <p>Hand-written rather than commons-math3's QRDecomposition, whose reflections follow the same convention but whose
 * getQ() is the full m x m Q: 14336 x 14336 doubles (1.6 GB) for a Mistral down_proj's transpose, where OLoRA and
 * Halko's range finder need only its first k columns.
 */
public final class ThinQr {
    private ThinQr() {}

    /**
     * @param q the first k columns of Q, column-major: q[j] is column j (length m)
     * @param r R [k][k], upper triangular (row-major)
     */
    public record Result(double[][] q, double[][] r) {}

    /** @param columns the matrix by columns (columns[j] has length m), left as it was */
    public static Result of(double[][] columns) {
        int k = columns.length;
        int m = columns[0].length;
        if (m < k) {
            throw new IllegalArgumentException("thin QR of " + m + " x " + k + ": needs at least as many rows");
        }
        double[][] a = new double[k][];
        for (int j = 0; j < k; j++) {
            a[j] = columns[j].clone();
        }
        double[][] r = new double[k][k];
        double[][] v = new double[k][];
        double[] tau = new double[k];
        for (int j = 0; j < k; j++) {
            double[] x = a[j];
            double alpha = x[j];
            double tail = 0;
            for (int i = j + 1; i < m; i++) {
                tail += x[i] * x[i];
            }
            double[] reflector = new double[m];
            reflector[j] = 1;
            double beta = alpha;
            if (tail > 0) {
                beta = -Math.copySign(Math.sqrt(alpha * alpha + tail), alpha);
                tau[j] = (beta - alpha) / beta;
                double scale = 1 / (alpha - beta);
                for (int i = j + 1; i < m; i++) {
                    reflector[i] = x[i] * scale;
                }
            }
            v[j] = reflector;
            r[j][j] = beta;
            for (int c = j + 1; c < k; c++) {
                reflect(a[c], reflector, tau[j], j);
                r[j][c] = a[c][j];
            }
        }
        // orgqr: Q's first k columns are H_0 H_1 ... H_{k-1} applied to the identity's, the last reflector first.
        double[][] q = new double[k][m];
        for (int c = 0; c < k; c++) {
            q[c][c] = 1;
        }
        for (int j = k - 1; j >= 0; j--) {
            for (int c = 0; c < k; c++) {
                reflect(q[c], v[j], tau[j], j);
            }
        }
        return new Result(q, r);
    }

    /** column := (I - tau v v^T) column, v zero above {@code from}. */
    private static void reflect(double[] column, double[] v, double tau, int from) {
        if (tau == 0) {
            return;
        }
        double dot = 0;
        for (int i = from; i < column.length; i++) {
            dot += v[i] * column[i];
        }
        double factor = tau * dot;
        for (int i = from; i < column.length; i++) {
            column[i] -= factor * v[i];
        }
    }
}
