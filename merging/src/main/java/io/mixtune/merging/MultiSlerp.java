package io.mixtune.merging;

import java.util.List;

/**
 * mergekit's multislerp: the models (with a base, their task vectors x_i, added back to it), each whole tensor one
 * vector, interpolated on the sphere by weights w (divided by their sum unless normalize_weights is false): u_i =
 * x_i / (|x_i| + 1e-8), mean = sum w_i u_i normalised, the tangents u_i - (u_i . mean) mean summed by weight into r,
 * out = (mean cos|r| + r sin|r| / |r|) sum w_i |x_i| (|r| + 1e-8 where it divides). Where |sum w_i u_i| < 1e-8 two
 * models fall back to w_0 x_0 + w_1 x_1, more are refused (mergekit's rules); one model is itself. Sums run in double,
 * and no tensor-sized scratch is kept: each pass recomputes u_i from the inputs.
 */
final class MultiSlerp implements TensorMerge {
    private static final double EPS = 1e-8;
    private final double[] weights;

    MultiSlerp(double[] weights, boolean normalize) {
        double sum = 0;
        for (double w : weights) {
            sum += w;
        }
        this.weights = weights.clone();
        if (normalize) {
            for (int i = 0; i < weights.length; i++) {
                this.weights[i] = weights[i] / sum;
            }
        }
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
            for (int j = 0; j < length; j++) {
                double x = delta(models.get(i), base, j);
                norms[i] += x * x;
            }
            norms[i] = Math.sqrt(norms[i]);
        }
        double meanNorm = 0;
        for (int j = 0; j < length; j++) {
            double mean = weightedUnitSum(models, base, norms, j);
            meanNorm += mean * mean;
        }
        meanNorm = Math.sqrt(meanNorm);
        float[] out = models.get(0);
        if (meanNorm < EPS) {
            if (n != 2) {
                throw new IllegalArgumentException("multislerp: tensor '" + name + "': the weighted sum of the unit"
                        + " task vectors is zero (antipodal inputs whose weights balance out); use other weights");
            }
            for (int j = 0; j < length; j++) {
                double merged = weights[0] * delta(models.get(0), base, j) + weights[1] * delta(models.get(1), base, j);
                out[j] = (float) (base == null ? merged : base[j] + merged);
            }
            return out;
        }
        double[] dots = new double[n];
        for (int j = 0; j < length; j++) {
            double mean = weightedUnitSum(models, base, norms, j) / meanNorm;
            for (int i = 0; i < n; i++) {
                dots[i] += delta(models.get(i), base, j) / (norms[i] + EPS) * mean;
            }
        }
        double tangentNorm = 0;
        for (int j = 0; j < length; j++) {
            double tangent = tangent(models, base, norms, dots, weightedUnitSum(models, base, norms, j) / meanNorm, j);
            tangentNorm += tangent * tangent;
        }
        tangentNorm = Math.sqrt(tangentNorm) + EPS;
        double averageNorm = 0;
        for (int i = 0; i < n; i++) {
            averageNorm += norms[i] * weights[i];
        }
        double cos = Math.cos(tangentNorm);
        double sinOver = Math.sin(tangentNorm) / tangentNorm;
        for (int j = 0; j < length; j++) {
            double mean = weightedUnitSum(models, base, norms, j) / meanNorm;
            double tangent = tangent(models, base, norms, dots, mean, j);
            double merged = (mean * cos + tangent * sinOver) * averageNorm;
            out[j] = (float) (base == null ? merged : base[j] + merged);
        }
        return out;
    }

    private double weightedUnitSum(List<float[]> models, float[] base, double[] norms, int j) {
        double sum = 0;
        for (int i = 0; i < norms.length; i++) {
            sum += weights[i] * delta(models.get(i), base, j) / (norms[i] + EPS);
        }
        return sum;
    }

    private double tangent(List<float[]> models, float[] base, double[] norms, double[] dots, double mean, int j) {
        double sum = 0;
        for (int i = 0; i < norms.length; i++) {
            sum += weights[i] * (delta(models.get(i), base, j) / (norms[i] + EPS) - dots[i] * mean);
        }
        return sum;
    }

    /** The model's entry, less the base's where there is one (a task vector, float32 as mergekit subtracts). */
    private static double delta(float[] model, float[] base, int j) {
        return base == null ? model[j] : (float) (model[j] - base[j]);
    }
}
