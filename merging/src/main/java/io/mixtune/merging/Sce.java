package io.mixtune.merging;

import java.util.Arrays;
import java.util.List;

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
        for (float[] model : models) {
            for (int j = 0; j < length; j++) {
                model[j] = model[j] - base[j];
            }
        }
        if (selectTopk < 1) {
            boolean[] kept = topVariance(models, length);
            for (float[] delta : models) {
                for (int j = 0; j < length; j++) {
                    if (!kept[j]) {
                        delta[j] = 0;
                    }
                }
            }
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
            for (float[] delta : models) {
                sum += delta[j];
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

    /** The entries of the int(selectTopk nonzero) largest variances across the task vectors. */
    private boolean[] topVariance(List<float[]> deltas, int length) {
        boolean[] kept = new boolean[length];
        if (selectTopk <= 0) {
            return kept;
        }
        double[] variance = new double[length];
        int nonzero = 0;
        for (int j = 0; j < length; j++) {
            double mean = 0;
            for (float[] delta : deltas) {
                mean += delta[j];
            }
            mean /= deltas.size();
            double sum = 0;
            for (float[] delta : deltas) {
                sum += (delta[j] - mean) * (delta[j] - mean);
            }
            variance[j] = sum / deltas.size();
            nonzero += variance[j] != 0 ? 1 : 0;
        }
        int k = (int) (nonzero * selectTopk);
        if (k == 0) {
            return kept;
        }
        // The k-th largest variance by sorting primitives (no per-entry objects on a large tensor); entries above it
        // are kept, and of those equal to it the lowest indices, k in all.
        double[] sorted = variance.clone();
        Arrays.sort(sorted);
        double threshold = sorted[length - k];
        int equalKept = k;
        for (double v : variance) {
            equalKept -= v > threshold ? 1 : 0;
        }
        for (int j = 0; j < length; j++) {
            if (variance[j] > threshold) {
                kept[j] = true;
            } else if (variance[j] == threshold && equalKept > 0) {
                kept[j] = true;
                equalKept--;
            }
        }
        return kept;
    }
}
