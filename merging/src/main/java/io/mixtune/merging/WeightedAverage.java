package io.mixtune.merging;

import java.util.List;

/**
 * sum_i c_i x_i with fixed coefficients: linear (model soups, c_i = w_i / sum w), swa, lawa and warm (c_i = 1/n), and
 * ema over checkpoints ordered oldest first (c_0 = d^(n-1), c_i = (1 - d) d^(n-1-i), which is the recursion
 * ema = d ema + (1 - d) x_i started at x_0, unrolled).
 */
final class WeightedAverage implements TensorMerge {
    private final double[] coefficients;

    WeightedAverage(double[] coefficients) {
        this.coefficients = coefficients.clone();
    }

    /** c_i = w_i / sum w when normalising, else w_i. */
    static double[] coefficients(List<Double> weights, boolean normalize) {
        double sum = weights.stream().mapToDouble(Double::doubleValue).sum();
        if (normalize && Math.abs(sum) < 1e-8) {
            throw new IllegalArgumentException("the weights " + weights + " sum to " + sum + ": normalising by them"
                    + " is undefined; give weights with a non-zero sum or normalize: false");
        }
        return weights.stream().mapToDouble(w -> normalize ? w / sum : w).toArray();
    }

    /** The EMA's coefficients for n checkpoints ordered oldest first. */
    static double[] emaCoefficients(int n, double decay) {
        double[] c = new double[n];
        c[0] = Math.pow(decay, n - 1);
        for (int i = 1; i < n; i++) {
            c[i] = (1 - decay) * Math.pow(decay, n - 1 - i);
        }
        return c;
    }

    double[] coefficients() {
        return coefficients.clone();
    }

    @Override
    public float[] merge(String name, float[] base, List<float[]> models) {
        float[] out = models.get(0);
        for (int j = 0; j < out.length; j++) {
            double sum = 0;
            for (int i = 0; i < coefficients.length; i++) {
                sum += coefficients[i] * models.get(i)[j];
            }
            out[j] = (float) sum;
        }
        return out;
    }
}
