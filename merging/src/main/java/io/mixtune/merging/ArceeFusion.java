package io.mixtune.merging;

import java.util.List;
import java.util.function.IntToDoubleFunction;

/**
 * mergekit's arcee_fusion: importance = |m - base| KL(p || q) per entry, p and q the softmax of the model's and the
 * base's rows (the last dimension; a 1-d tensor is one row) plus 1e-8; the threshold is median + 1.5 (q3 - q1), each the
 * sorted importance at index floor(q (n - 1)); the model's entries of importance at or above it, the base's elsewhere.
 * mergekit samples a million entries at random from a larger tensor for its quantiles; mixtune sorts them all.
 */
final class ArceeFusion implements TensorMerge {
    @Override
    public float[] merge(String name, float[] base, List<float[]> models) {
        return merge(name, new long[] {base.length}, base, models);
    }

    @Override
    public float[] merge(String name, long[] shape, float[] base, List<float[]> models) {
        float[] model = models.get(0);
        int length = base.length;
        int rowLength = TensorMerge.rowLength(shape, length);
        // importance_j = |m_j - b_j| KL(row of j), recomputed from the row's KL wherever read: no tensor-sized copy
        double[] divergences = new double[length / rowLength];
        for (int row = 0; row < divergences.length; row++) {
            divergences[row] = divergence(model, base, row * rowLength, rowLength);
        }
        IntToDoubleFunction importance = j -> Math.abs((double) model[j] - base[j]) * divergences[j / rowLength];
        double median = OrderStatistic.kthSmallest(importance, length, (int) Math.floor(0.5 * (length - 1)));
        double iqr = OrderStatistic.kthSmallest(importance, length, (int) Math.floor(0.75 * (length - 1)))
                - OrderStatistic.kthSmallest(importance, length, (int) Math.floor(0.25 * (length - 1)));
        double threshold = median + 1.5 * iqr;
        for (int j = 0; j < length; j++) {
            if (importance.applyAsDouble(j) >= threshold) {
                base[j] = (float) (base[j] + (double) (model[j] - base[j]));
            }
        }
        return base;
    }

    /** KL(softmax(p row) + 1e-8 || softmax(q row) + 1e-8), as mergekit sums it (the epsilon-shifted terms unnormalised). */
    private static double divergence(float[] p, float[] q, int start, int length) {
        double maxP = Double.NEGATIVE_INFINITY;
        double maxQ = Double.NEGATIVE_INFINITY;
        for (int j = start; j < start + length; j++) {
            maxP = Math.max(maxP, p[j]);
            maxQ = Math.max(maxQ, q[j]);
        }
        double sumP = 0;
        double sumQ = 0;
        for (int j = start; j < start + length; j++) {
            sumP += Math.exp(p[j] - maxP);
            sumQ += Math.exp(q[j] - maxQ);
        }
        double kl = 0;
        for (int j = start; j < start + length; j++) {
            double pj = Math.exp(p[j] - maxP) / sumP + 1e-8;
            double qj = Math.exp(q[j] - maxQ) / sumQ + 1e-8;
            kl += pj * Math.log(pj / qj);
        }
        return kl;
    }
}
