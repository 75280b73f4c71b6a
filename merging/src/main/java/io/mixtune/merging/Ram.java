package io.mixtune.merging;

import java.util.List;

/**
 * mergekit's ram and ramplus_tl (Reinforced Agent Merging): task vectors d_i = m_i - base (float32); an entry counts
 * for model i where |d_i| > epsilon; out = base + sum_i d_i c_ij over the counted entries, c = 1 where model i alone
 * counts there (times lambda_i = 1 + r clamp(shared_i / max(unique_i, epsilon), 0, alpha) for ramplus_tl, shared_i and
 * unique_i model i's counted entries that others count too or not, over the tensor), else 1 / (models counting it).
 */
final class Ram implements TensorMerge {
    private final double epsilon;
    private final boolean plus;
    private final double r;
    private final double alpha;

    Ram(double epsilon, boolean plus, double r, double alpha) {
        this.epsilon = epsilon;
        this.plus = plus;
        this.r = r;
        this.alpha = alpha;
    }

    @Override
    public float[] merge(String name, float[] base, List<float[]> models) {
        int n = models.size();
        int length = base.length;
        TensorMerge.subtractBase(models, base);
        double[] lambdas = new double[n];
        java.util.Arrays.fill(lambdas, 1);
        if (plus) {
            long[] shared = new long[n];
            long[] unique = new long[n];
            for (int j = 0; j < length; j++) {
                int count = count(models, j);
                for (int i = 0; i < n; i++) {
                    if (Math.abs(models.get(i)[j]) > epsilon) {
                        shared[i] += count > 1 ? 1 : 0;
                        unique[i] += count == 1 ? 1 : 0;
                    }
                }
            }
            for (int i = 0; i < n; i++) {
                double rho = shared[i] / Math.max(unique[i], epsilon);
                lambdas[i] = 1 + r * Math.max(0, Math.min(alpha, rho));
            }
        }
        for (int j = 0; j < length; j++) {
            int count = count(models, j);
            double merged = 0;
            for (int i = 0; i < n; i++) {
                float d = models.get(i)[j];
                if (Math.abs(d) > epsilon) {
                    merged += count == 1 ? d * lambdas[i] : (double) d / count;
                }
            }
            base[j] = (float) (base[j] + merged);
        }
        return base;
    }

    private int count(List<float[]> deltas, int j) {
        int count = 0;
        for (float[] delta : deltas) {
            count += Math.abs(delta[j]) > epsilon ? 1 : 0;
        }
        return count;
    }
}
