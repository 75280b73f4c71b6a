package io.mixtune.merging;

import java.util.List;

/**
 * The task-vector methods, mergekit's "generalized task arithmetic": with task vectors d_i = m_i - base (in float32,
 * as the checkpoints are computed in), each thinned by the method's sparsification and weighted, e_i = w_i d_i,
 * <pre>
 *   task_arithmetic, dare_linear:  out = base + lambda * sum_i e_i            / (sum_i w_i           if normalize)
 *   ties, dare_ties:               s = sign(sum_i e_i) (0 counts as +), A = {i : sign(e_i) = s}
 *                                  out = base + lambda * sum_{i in A} e_i    / (sum_{i in A} w_i    if normalize)
 * </pre>
 * per entry; an entry where a task vector is zero has sign 0 and so is in no A, and an empty A divides by 1. ties trims
 * each d_i to its largest-magnitude fraction density ({@link MagnitudeTrim}); dare_* keep each entry with probability
 * density ({@link DareMask}); with rescale (dare_*'s default, ties' option) the kept entries are scaled back to the
 * L1 norm of d_i, as mergekit does. Sums run in double.
 */
final class TaskArithmetic implements TensorMerge {
    private final MergeMethod method;
    private final double[] weights;
    private final double[] densities;
    private final boolean normalize;
    private final double lambda;
    private final boolean rescale;
    private final long seed;
    private final double[] gammas;
    private final double[] epsilons;

    TaskArithmetic(MergeMethod method, double[] weights, double[] densities, boolean normalize, double lambda,
            boolean rescale, long seed) {
        this(method, weights, densities, normalize, lambda, rescale, seed, null, null);
    }

    /**
     * @param gammas breadcrumbs: the fraction of each task vector's largest magnitudes dropped (else null)
     * @param epsilons della: the spread of each task vector's keep probabilities around its density (else null)
     */
    TaskArithmetic(MergeMethod method, double[] weights, double[] densities, boolean normalize, double lambda,
            boolean rescale, long seed, double[] gammas, double[] epsilons) {
        if (!method.needsBase()) {
            throw new IllegalArgumentException(method.yamlName() + " is not a task-vector method");
        }
        this.method = method;
        this.weights = weights.clone();
        this.densities = densities.clone();
        this.normalize = normalize;
        this.lambda = lambda;
        this.rescale = rescale;
        this.seed = seed;
        this.gammas = gammas == null ? null : gammas.clone();
        this.epsilons = epsilons == null ? null : epsilons.clone();
    }

    /**
     * mergekit's rescale (sparsify.py, rescaled_masked_tensor with the L1 norm): the kept entries times
     * sum|d| / sum|kept|, so the thinned task vector keeps the L1 norm of the whole one; left as it is when either sum is
     * below 1e-7. (DARE's paper divides by density instead, which keeps the expectation, not the norm.)
     */
    private static void rescaleToL1(float[] kept, double normBefore) {
        double normAfter = l1(kept);
        if (normBefore < 1e-7 || normAfter < 1e-7) {
            return;
        }
        double scale = normBefore / normAfter;
        for (int j = 0; j < kept.length; j++) {
            kept[j] = (float) (kept[j] * scale);
        }
    }

    private static double l1(float[] values) {
        double sum = 0;
        for (float v : values) {
            sum += Math.abs(v);
        }
        return sum;
    }

    @Override
    public float[] merge(String name, float[] base, List<float[]> models) {
        return merge(name, new long[] {base.length}, base, models);
    }

    @Override
    public float[] merge(String name, long[] shape, float[] base, List<float[]> models) {
        TensorMerge.subtractBase(models, base);
        for (int i = 0; i < models.size(); i++) {
            float[] delta = models.get(i);
            if (method.sparsification() == MergeMethod.Sparsification.NONE || densities[i] >= 1) {
                continue;
            }
            double normBefore = l1(delta);
            switch (method.sparsification()) {
                case MAGNITUDE -> MagnitudeTrim.keepLargest(delta, densities[i]);
                case MAGNITUDE_OUTLIERS -> MagnitudeTrim.keepMiddle(delta, densities[i], gammas[i]);
                case MAGNITUDE_RANKED -> DareMask.dropRanked(delta, TensorMerge.rowLength(shape, delta.length),
                        densities[i], epsilons[i], seed, i, name);
                default -> DareMask.drop(delta, densities[i], seed, i, name);
            }
            if (rescale) {
                rescaleToL1(delta, normBefore);
            }
        }
        double allWeights = 0;
        for (double w : weights) {
            allWeights += w;
        }
        for (int j = 0; j < base.length; j++) {
            double mixed = 0;
            double divisor;
            if (method.electsSign()) {
                double mass = 0;
                for (int i = 0; i < weights.length; i++) {
                    mass += weights[i] * models.get(i)[j];
                }
                double elected = mass >= 0 ? 1 : -1;
                divisor = 0;
                for (int i = 0; i < weights.length; i++) {
                    double e = weights[i] * models.get(i)[j];
                    if (Math.signum(e) == elected) {
                        mixed += e;
                        divisor += weights[i];
                    }
                }
                if (divisor == 0) {
                    divisor = 1;
                }
            } else {
                for (int i = 0; i < weights.length; i++) {
                    mixed += weights[i] * models.get(i)[j];
                }
                divisor = Math.abs(allWeights) < 1e-8 ? 1 : allWeights;
            }
            if (normalize) {
                mixed /= divisor;
            }
            base[j] = (float) (base[j] + lambda * mixed);
        }
        return base;
    }
}
