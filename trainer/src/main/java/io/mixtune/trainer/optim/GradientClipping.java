package io.mixtune.trainer.optim;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import java.util.List;

/** Global-norm clipping as torch.nn.utils.clip_grad_norm_: one L2 norm over all gradients, scaled by max/(norm+1e-6). */
public final class GradientClipping {
    private GradientClipping() {}

    /**
     * The L2 norm of all the parameters' gradients together, computed in double from per-array sums of squares. The
     * per-array sums are read back in one transfer: on a GPU each read is a device synchronisation, and a Mixtral
     * adapter on every expert has thousands of arrays.
     */
    public static double globalNorm(List<NDArray> parameters) {
        NDList totals = new NDList(parameters.size());
        try {
            for (NDArray parameter : parameters) {
                // getGradient() hands out a new handle each call, and every result lands in the parameter's manager:
                // close them all, or memory grows each step.
                try (NDArray gradient = parameter.getGradient(); NDArray squares = gradient.square()) {
                    totals.add(squares.sum());
                }
            }
            return sqrtOfSum(totals);
        } finally {
            totals.close();
        }
    }

    /**
     * Sets every gradient to zero before a step accumulates into them: written over (libtorch's grad().zero_(), one
     * call per array), not multiplied by 0, which would keep the NaNs of a float16 step that overflowed. A parameter
     * whose gradient was never computed has none to zero: its first backward writes it.
     */
    public static void zero(List<NDArray> parameters) {
        for (NDArray parameter : parameters) {
            JniUtils.zeroGrad((PtNDArray) parameter);
        }
    }

    /**
     * {@link #globalNorm(List)} of gradients laid out flat in buckets ({@link AdamW#flatGradients()}), bucket b in runs
     * of {@code sizes.get(b)}: the same per-array float sums (each run's squares summed as the array's own, a contiguous
     * run of the same length), read back in one transfer and added in double in the same order, so the same bits.
     */
    public static double globalNorm(NDList flatGradients, List<long[]> sizes) {
        NDList totals = new NDList();
        try {
            for (int b = 0; b < flatGradients.size(); b++) {
                try (NDArray squares = flatGradients.get(b).square();
                        NDList runs = FlatGradients.runs(squares, sizes.get(b))) {
                    for (NDArray run : runs) {
                        totals.add(run.sum());
                    }
                }
            }
            return sqrtOfSum(totals);
        } finally {
            totals.close();
        }
    }

    /** The per-array float sums read back in one transfer, added in double in their order, square-rooted. */
    private static double sqrtOfSum(NDList totals) {
        float[] sums;
        try (NDArray stacked = NDArrays.stack(totals)) {
            sums = stacked.toFloatArray();
        }
        double sum = 0;
        for (float arraySum : sums) {
            sum += arraySum;
        }
        return Math.sqrt(sum);
    }

    /**
     * {@link #clip(List, double)} of gradients laid out flat in buckets, each scaled in place in one call; the
     * parameters' own gradients are left as they are.
     */
    public static double clip(NDList flatGradients, List<long[]> sizes, double maxNorm) {
        double norm = globalNorm(flatGradients, sizes);
        double coefficient = maxNorm / (norm + 1e-6);
        if (maxNorm > 0 && coefficient < 1) {
            for (NDArray gradients : flatGradients) {
                gradients.muli(coefficient);
            }
        }
        return norm;
    }

    /** Scales the gradients down when their global norm exceeds maxNorm; returns the norm before clipping. */
    public static double clip(List<NDArray> parameters, double maxNorm) {
        double norm = globalNorm(parameters);
        double coefficient = maxNorm / (norm + 1e-6);
        if (maxNorm > 0 && coefficient < 1) {
            for (NDArray parameter : parameters) {
                try (NDArray gradient = parameter.getGradient()) {
                    gradient.muli(coefficient);
                }
            }
        }
        return norm;
    }
}
