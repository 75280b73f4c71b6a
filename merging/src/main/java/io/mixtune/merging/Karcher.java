package io.mixtune.merging;

import java.util.List;

/**
 * mergekit's karcher (karcher_merge_tensors): the models' unit tensors u_i = x_i / |x_i| (those of norm above tol, at
 * weights 1/n renormalised among them) start from their normalised mean u, then up to maxIter times T = sum a_i
 * theta_i / sin(theta_i) (u_i - cos(theta_i) u), theta_i = acos(clamp(u . u_i, -1, 1)) (skipped below tol), stopping when
 * |T| < tol, else u = cos|T| u + sin|T| T / |T| renormalised; the result is u times sum (1/n) |x_i|. All norms are over
 * the whole tensor; sums run in double, u is the one tensor-sized scratch.
 */
final class Karcher implements TensorMerge {
    private final int maxIter;
    private final double tol;

    Karcher(int maxIter, double tol) {
        this.maxIter = maxIter;
        this.tol = tol;
    }

    @Override
    public float[] merge(String name, float[] base, List<float[]> models) {
        int n = models.size();
        if (n == 1) {
            return models.get(0);
        }
        int length = models.get(0).length;
        double[] norms = new double[n];
        for (int i = 0; i < n; i++) {
            double sum = 0;
            for (float x : models.get(i)) {
                sum += (double) x * x;
            }
            norms[i] = Math.sqrt(sum);
        }
        double[] alphas = new double[n];
        double alphaSum = 0;
        for (int i = 0; i < n; i++) {
            alphaSum += norms[i] > tol ? 1.0 / n : 0;
        }
        float[] out = models.get(0);
        if (alphaSum == 0) {
            java.util.Arrays.fill(out, 0);
            return out;
        }
        for (int i = 0; i < n; i++) {
            alphas[i] = norms[i] > tol ? (1.0 / n) / alphaSum : 0;
        }
        double[] u = new double[length];
        for (int j = 0; j < length; j++) {
            for (int i = 0; i < n; i++) {
                u[j] += alphas[i] == 0 ? 0 : alphas[i] * models.get(i)[j] / norms[i];
            }
        }
        double normU = norm(u);
        if (normU < tol) {
            int first = firstValid(alphas);
            for (int j = 0; j < length; j++) {
                u[j] = models.get(first)[j] / norms[first];
            }
        } else {
            scale(u, 1 / normU);
        }
        double[] dots = new double[n];
        double[] coefficients = new double[n];
        for (int iteration = 0; iteration < maxIter; iteration++) {
            java.util.Arrays.fill(dots, 0);
            for (int j = 0; j < length; j++) {
                for (int i = 0; i < n; i++) {
                    dots[i] += alphas[i] == 0 ? 0 : u[j] * models.get(i)[j] / norms[i];
                }
            }
            for (int i = 0; i < n; i++) {
                dots[i] = Math.max(-1, Math.min(1, dots[i]));
                double theta = Math.acos(dots[i]);
                coefficients[i] = alphas[i] == 0 || theta < tol ? 0 : alphas[i] * theta / Math.sin(theta);
            }
            double normT = 0;
            for (int j = 0; j < length; j++) {
                double tj = tangent(models, norms, dots, coefficients, u[j], j);
                normT += tj * tj;
            }
            normT = Math.sqrt(normT);
            if (normT < tol) {
                break;
            }
            double cos = Math.cos(normT);
            double sinOver = Math.sin(normT) / normT;
            for (int j = 0; j < length; j++) {
                u[j] = cos * u[j] + sinOver * tangent(models, norms, dots, coefficients, u[j], j);
            }
            double normNext = norm(u);
            if (normNext > tol) {
                scale(u, 1 / normNext);
            }
        }
        double s = 0;
        for (double norm : norms) {
            s += norm / n;
        }
        for (int j = 0; j < length; j++) {
            out[j] = (float) (s * u[j]);
        }
        return out;
    }

    private static double tangent(List<float[]> models, double[] norms, double[] dots, double[] coefficients, double uj,
            int j) {
        double sum = 0;
        for (int i = 0; i < norms.length; i++) {
            if (coefficients[i] != 0) {
                sum += coefficients[i] * (models.get(i)[j] / norms[i] - dots[i] * uj);
            }
        }
        return sum;
    }

    private static int firstValid(double[] alphas) {
        for (int i = 0; i < alphas.length; i++) {
            if (alphas[i] != 0) {
                return i;
            }
        }
        throw new IllegalStateException("no model of nonzero norm");
    }

    private static double norm(double[] v) {
        double sum = 0;
        for (double x : v) {
            sum += x * x;
        }
        return Math.sqrt(sum);
    }

    private static void scale(double[] v, double factor) {
        for (int j = 0; j < v.length; j++) {
            v[j] *= factor;
        }
    }
}
