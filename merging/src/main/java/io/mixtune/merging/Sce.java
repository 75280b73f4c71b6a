package io.mixtune.merging;

import java.util.List;
import java.util.function.IntToDoubleFunction;

/**
 * mergekit's sce (SCE, Wan et al. 2024): task vectors d_i = m_i - base (float32); with selectTopk < 1 only the
 * int(k nonzero) entries of largest variance across the models (population variance; nonzero: entries whose variance is
 * not 0) are kept, in every d_i; each model's weight is its mean d_i^2 over the tensor, divided by their sum (uniform
 * where the sum is under 1e-6); an entry's d_i counts where its sign is the elected one (the sign of sum_i d_i, + where
 * the sum is 0, a zero entry never); out = base + sum w_i d_i / max(sum w_i, 1e-6) over the counted ones. Ties in the
 * variance ranking go to the lower index (torch.topk leaves them unspecified). Sums run in double.
 */
final class Sce implements TensorMerge {
    private final double selectTopk;

    Sce(double selectTopk) {
        this.selectTopk = selectTopk;
    }

    @Override
    public float[] merge(String name, float[] base, List<float[]> models) {
        int n = models.size();
        int length = base.length;
        // The task vectors, in place of the models (float32 differences, as mergekit subtracts).
        TensorMerge.subtractBase(models, base);
        if (selectTopk < 1) {
            keepTopVariance(models, length);
        }
        double[] weights = new double[n];
        double weightSum = 0;
        for (int i = 0; i < n; i++) {
            double sum = 0;
            for (float d : models.get(i)) {
                sum += (double) d * d;
            }
            weights[i] = sum / length;
            weightSum += weights[i];
        }
        for (int i = 0; i < n; i++) {
            weights[i] = Math.abs(weightSum) < 1e-6 ? 1.0 / n : weights[i] / weightSum;
        }
        for (int j = 0; j < length; j++) {
            double sum = 0;
            for (int i = 0; i < n; i++) {
                sum += models.get(i)[j];
            }
            double elected = sum >= 0 ? 1 : -1;
            double merged = 0;
            double counted = 0;
            for (int i = 0; i < n; i++) {
                float d = models.get(i)[j];
                if (Math.signum(d) == elected) {
                    merged += weights[i] * d;
                    counted += weights[i];
                }
            }
            base[j] = (float) (base[j] + merged / Math.max(counted, 1e-6));
        }
        return base;
    }

    /**
     * Zeroes every task vector outside the entries of the int(selectTopk nonzero) largest variances: those above the
     * k-th largest, and of those equal to it the lowest indices, k in all. Each entry's variance is recomputed where
     * read (it depends on that entry alone, so zeroing in index order leaves the later ones as they were).
     */
    private void keepTopVariance(List<float[]> deltas, int length) {
        IntToDoubleFunction variance = j -> variance(deltas, j);
        int nonzero = 0;
        for (int j = 0; j < length; j++) {
            nonzero += variance.applyAsDouble(j) != 0 ? 1 : 0;
        }
        int k = selectTopk <= 0 ? 0 : (int) (nonzero * selectTopk);
        double threshold = k == 0 ? Double.POSITIVE_INFINITY
                : OrderStatistic.kthSmallest(variance, length, length - k);
        int equalKept = k;
        for (int j = 0; j < length && k > 0; j++) {
            equalKept -= variance.applyAsDouble(j) > threshold ? 1 : 0;
        }
        for (int j = 0; j < length; j++) {
            double v = k == 0 ? 0 : variance.applyAsDouble(j);
            boolean kept = k > 0 && (v > threshold || v == threshold && equalKept-- > 0);
            if (!kept) {
                for (int i = 0; i < deltas.size(); i++) {
                    deltas.get(i)[j] = 0;
                }
            }
        }
    }

    /** The population variance of entry j across the task vectors, in double. */
    private static double variance(List<float[]> deltas, int j) {
        // indexed, not for-each: an iterator per entry would be garbage a tensor's worth of times over
        int n = deltas.size();
        double mean = 0;
        for (int i = 0; i < n; i++) {
            mean += deltas.get(i)[j];
        }
        mean /= n;
        double sum = 0;
        for (int i = 0; i < n; i++) {
            float d = deltas.get(i)[j];
            sum += (d - mean) * (d - mean);
        }
        return sum / n;
    }
}
