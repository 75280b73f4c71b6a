package io.mixtune.merging;

import java.util.List;

/**
 * Model Stock (Jang et al. 2024) as mergekit's model_stock computes it: with task vectors d_i = m_i - base (float32) of
 * N models and cos the mean of the pairwise cosines between them (each dot product over max(|d_i| |d_j|, 1e-6),
 * clamped to [-1, 1]), t = N cos / (1 + (N - 1) cos) and out = t mean_i(m_i) + (1 - t) base. The paper's angle is for
 * two models; with more, mergekit averages the pairs' cosines, and so does this. With {@code filter_wise} each row (the
 * last dimension; a 1-d tensor is one row) has its own cos and t. Sums run in double.
 */
final class ModelStock implements TensorMerge {
    private final boolean filterWise;

    ModelStock(boolean filterWise) {
        this.filterWise = filterWise;
    }

    @Override
    public float[] merge(String name, float[] base, List<float[]> models) {
        return merge(name, new long[] {base.length}, base, models);
    }

    @Override
    public float[] merge(String name, long[] shape, float[] base, List<float[]> models) {
        int n = models.size();
        int rowLength = filterWise ? TensorMerge.rowLength(shape, base.length) : base.length;
        double[][] dots = new double[n][n];
        double[] delta = new double[n];
        for (int start = 0; start < base.length; start += rowLength) {
            for (double[] row : dots) {
                java.util.Arrays.fill(row, 0);
            }
            for (int j = start; j < start + rowLength; j++) {
                for (int i = 0; i < n; i++) {
                    delta[i] = (float) (models.get(i)[j] - base[j]);
                }
                for (int i = 0; i < n; i++) {
                    for (int k = i; k < n; k++) {
                        dots[i][k] += delta[i] * delta[k];
                    }
                }
            }
            double cosSum = 0;
            for (int i = 0; i < n; i++) {
                for (int k = i + 1; k < n; k++) {
                    double cos = dots[i][k] / Math.max(Math.sqrt(dots[i][i]) * Math.sqrt(dots[k][k]), 1e-6);
                    cosSum += Math.max(-1, Math.min(1, cos));
                }
            }
            double cos = cosSum / (n * (n - 1) / 2.0);
            double t = n * cos / (1 + (n - 1) * cos);
            for (int j = start; j < start + rowLength; j++) {
                double mean = 0;
                for (float[] model : models) {
                    mean += model[j];
                }
                base[j] = (float) (t * (mean / n) + (1 - t) * base[j]);
            }
        }
        return base;
    }
}
