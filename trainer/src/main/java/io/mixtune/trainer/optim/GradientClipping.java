package io.mixtune.trainer.optim;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.index.NDIndex;
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
            float[] sums;
            try (NDArray stacked = NDArrays.stack(totals)) {
                sums = stacked.toFloatArray();
            }
            double sum = 0;
            for (float arraySum : sums) {
                sum += arraySum;
            }
            return Math.sqrt(sum);
        } finally {
            totals.close();
        }
    }

    /**
     * Sets every gradient to zero before a step accumulates into them: written over, not multiplied by 0, which would
     * keep the NaNs of a float16 step that overflowed.
     */
    public static void zero(List<NDArray> parameters) {
        for (NDArray parameter : parameters) {
            try (NDArray gradient = parameter.getGradient()) {
                gradient.set(new NDIndex("..."), 0);
            }
        }
    }

    /** Multiplies every gradient by {@code factor} in place (undoing a loss scale). */
    public static void multiply(List<NDArray> parameters, double factor) {
        for (NDArray parameter : parameters) {
            try (NDArray gradient = parameter.getGradient()) {
                gradient.muli(factor);
            }
        }
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
