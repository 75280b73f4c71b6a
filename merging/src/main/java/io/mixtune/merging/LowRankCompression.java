package io.mixtune.merging;

/**
 * Truncates a low-rank product B A (B [out, R], A [R, in]) to rank k with the least Frobenius error (Eckart-Young),
 * without forming the out x in product: B = Qb Rb and A^T = Qa Ra (thin Householder QR), then the small
 * Rb Ra^T = U S V^T (one-sided Jacobi SVD), so B A = Qb U S V^T Qa^T and its best rank-k part is
 * B' = Qb U_k S_k^(1/2), A' = S_k^(1/2) V_k^T Qa^T (the singular values split evenly between the factors, so neither
 * is ill-scaled for further training). Cost O((out + in) R^2 + R^3); everything in double.
 */
final class LowRankCompression {
    private LowRankCompression() {}

    /** @param relativeError ||B A - B' A'||_F / ||B A||_F (0 when B A = 0) */
    record Result(float[] b, float[] a, int rank, double relativeError) {}

    static Result truncate(float[] b, float[] a, int out, int in, int r, int k) {
        Qr qb = Qr.of(toDouble(b), out, r);
        Qr qa = Qr.of(transpose(toDouble(a), r, in), in, r);
        double[] core = multiplyTransposed(qb.r, qa.r, qb.p, r, qa.p);
        Svd svd = Svd.of(core, qb.p, qa.p);
        int rank = Math.min(k, svd.s.length);
        double total = 0;
        double dropped = 0;
        for (int i = 0; i < svd.s.length; i++) {
            total += svd.s[i] * svd.s[i];
            if (i >= rank) {
                dropped += svd.s[i] * svd.s[i];
            }
        }
        float[] newB = new float[out * rank];
        float[] newA = new float[rank * in];
        for (int c = 0; c < rank; c++) {
            double root = Math.sqrt(svd.s[c]);
            for (int row = 0; row < out; row++) {
                double sum = 0;
                for (int t = 0; t < qb.p; t++) {
                    sum += qb.q[row * qb.p + t] * svd.u[t * svd.s.length + c];
                }
                newB[row * rank + c] = (float) (sum * root);
            }
            for (int col = 0; col < in; col++) {
                double sum = 0;
                for (int t = 0; t < qa.p; t++) {
                    sum += svd.v[t * svd.s.length + c] * qa.q[col * qa.p + t];
                }
                newA[c * in + col] = (float) (sum * root);
            }
        }
        return new Result(newB, newA, rank, total == 0 ? 0 : Math.sqrt(dropped / total));
    }

    /** Thin QR of an m x n row-major matrix: Q [m, p] with orthonormal columns, R [p, n] upper triangular, p = min(m, n). */
    static final class Qr {
        final double[] q;
        final double[] r;
        final int p;

        private Qr(double[] q, double[] r, int p) {
            this.q = q;
            this.r = r;
            this.p = p;
        }

        static Qr of(double[] x, int m, int n) {
            double[] work = x.clone();
            int p = Math.min(m, n);
            double[][] reflectors = new double[p][];
            for (int j = 0; j < p; j++) {
                double norm = 0;
                for (int i = j; i < m; i++) {
                    norm += work[i * n + j] * work[i * n + j];
                }
                norm = Math.sqrt(norm);
                double[] v = new double[m - j];
                if (norm == 0) {
                    reflectors[j] = v;
                    continue;
                }
                double alpha = work[j * n + j] > 0 ? -norm : norm;
                for (int i = j; i < m; i++) {
                    v[i - j] = work[i * n + j];
                }
                v[0] -= alpha;
                double vNorm = 0;
                for (double e : v) {
                    vNorm += e * e;
                }
                if (vNorm == 0) {
                    reflectors[j] = new double[m - j];
                    continue;
                }
                for (int c = j; c < n; c++) {
                    double dot = 0;
                    for (int i = j; i < m; i++) {
                        dot += v[i - j] * work[i * n + c];
                    }
                    double f = 2 * dot / vNorm;
                    for (int i = j; i < m; i++) {
                        work[i * n + c] -= f * v[i - j];
                    }
                }
                for (int i = 0; i < v.length; i++) {
                    v[i] /= Math.sqrt(vNorm / 2);
                }
                reflectors[j] = v;
            }
            double[] r = new double[p * n];
            for (int i = 0; i < p; i++) {
                for (int c = i; c < n; c++) {
                    r[i * n + c] = work[i * n + c];
                }
            }
            // Q = H_0 H_1 ... H_{p-1} applied to the first p columns of the identity, last reflector first.
            double[] q = new double[m * p];
            for (int i = 0; i < p; i++) {
                q[i * p + i] = 1;
            }
            for (int j = p - 1; j >= 0; j--) {
                double[] v = reflectors[j];
                for (int c = 0; c < p; c++) {
                    double dot = 0;
                    for (int i = j; i < m; i++) {
                        dot += v[i - j] * q[i * p + c];
                    }
                    for (int i = j; i < m; i++) {
                        q[i * p + c] -= dot * v[i - j];
                    }
                }
            }
            return new Qr(q, r, p);
        }
    }

    /**
     * Thin SVD of a small m x n row-major matrix by one-sided Jacobi (Hestenes 1958): rotate column pairs until all
     * are orthogonal; singular values are the column norms, sorted descending. U [m, s], V [n, s] with s = min(m, n).
     */
    static final class Svd {
        final double[] u;
        final double[] s;
        final double[] v;

        private Svd(double[] u, double[] s, double[] v) {
            this.u = u;
            this.s = s;
            this.v = v;
        }

        static Svd of(double[] x, int m, int n) {
            if (m < n) {
                Svd t = of(transpose(x, m, n), n, m);
                return new Svd(t.v, t.s, t.u);
            }
            double[] w = x.clone();
            double[] v = new double[n * n];
            for (int i = 0; i < n; i++) {
                v[i * n + i] = 1;
            }
            for (int sweep = 0; sweep < 60; sweep++) {
                boolean rotated = false;
                for (int p = 0; p < n - 1; p++) {
                    for (int q = p + 1; q < n; q++) {
                        double alpha = 0;
                        double beta = 0;
                        double gamma = 0;
                        for (int i = 0; i < m; i++) {
                            alpha += w[i * n + p] * w[i * n + p];
                            beta += w[i * n + q] * w[i * n + q];
                            gamma += w[i * n + p] * w[i * n + q];
                        }
                        if (gamma == 0 || Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) {
                            continue;
                        }
                        rotated = true;
                        double zeta = (beta - alpha) / (2 * gamma);
                        double t = Math.signum(zeta == 0 ? 1 : zeta) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
                        double c = 1 / Math.sqrt(1 + t * t);
                        double sn = c * t;
                        rotate(w, m, n, p, q, c, sn);
                        rotate(v, n, n, p, q, c, sn);
                    }
                }
                if (!rotated) {
                    break;
                }
            }
            Integer[] order = new Integer[n];
            double[] norms = new double[n];
            for (int c = 0; c < n; c++) {
                order[c] = c;
                double sum = 0;
                for (int i = 0; i < m; i++) {
                    sum += w[i * n + c] * w[i * n + c];
                }
                norms[c] = Math.sqrt(sum);
            }
            java.util.Arrays.sort(order, (a, b) -> Double.compare(norms[b], norms[a]));
            double[] s = new double[n];
            double[] u = new double[m * n];
            double[] vSorted = new double[n * n];
            for (int k = 0; k < n; k++) {
                int c = order[k];
                s[k] = norms[c];
                for (int i = 0; i < m; i++) {
                    u[i * n + k] = s[k] == 0 ? 0 : w[i * n + c] / s[k];
                }
                for (int i = 0; i < n; i++) {
                    vSorted[i * n + k] = v[i * n + c];
                }
            }
            return new Svd(u, s, vSorted);
        }

        private static void rotate(double[] x, int rows, int cols, int p, int q, double c, double s) {
            for (int i = 0; i < rows; i++) {
                double xp = x[i * cols + p];
                double xq = x[i * cols + q];
                x[i * cols + p] = c * xp - s * xq;
                x[i * cols + q] = s * xp + c * xq;
            }
        }
    }

    private static double[] toDouble(float[] x) {
        double[] out = new double[x.length];
        for (int i = 0; i < x.length; i++) {
            out[i] = x[i];
        }
        return out;
    }

    private static double[] transpose(double[] x, int rows, int cols) {
        double[] out = new double[x.length];
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < cols; j++) {
                out[j * rows + i] = x[i * cols + j];
            }
        }
        return out;
    }

    /** X [m, k] times Y^T where Y is [n, k]: [m, n]. */
    private static double[] multiplyTransposed(double[] x, double[] y, int m, int k, int n) {
        double[] out = new double[m * n];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double sum = 0;
                for (int t = 0; t < k; t++) {
                    sum += x[i * k + t] * y[j * k + t];
                }
                out[i * n + j] = sum;
            }
        }
        return out;
    }
}
