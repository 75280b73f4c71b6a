package io.mixtune.trainer.optim;

import ai.djl.ndarray.NDArray;
import io.mixtune.model.nn.InPlaceCopy;
import java.util.ArrayList;
import java.util.List;

/**
 * AdamW as {@code torch.optim.AdamW} computes it (Loshchilov and Hutter 2019): decoupled weight decay applied to the
 * parameter first, moments m and v, bias correction, and eps added outside the square root of the corrected v. DJL's
 * fused adamUpdate places eps differently and clips one-sided, so this is written out in NDArray ops, run outside any
 * gradient collector (PyTorch's no_grad), updating the parameters in place.
 */
public final class AdamW {
    private final List<NDArray> parameters;
    private final List<NDArray> firstMoments = new ArrayList<>();
    private final List<NDArray> secondMoments = new ArrayList<>();
    private final double beta1;
    private final double beta2;
    private final double eps;
    private final double weightDecay;
    private long step;

    public AdamW(List<NDArray> parameters, double beta1, double beta2, double eps, double weightDecay) {
        this.parameters = List.copyOf(parameters);
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.eps = eps;
        this.weightDecay = weightDecay;
        for (NDArray parameter : parameters) {
            firstMoments.add(parameter.zerosLike());
            secondMoments.add(parameter.zerosLike());
        }
    }

    /** One update with the gradients the parameters hold now. */
    public void step(double lr) {
        step++;
        double biasCorrection1 = 1 - Math.pow(beta1, step);
        double biasCorrection2Sqrt = Math.sqrt(1 - Math.pow(beta2, step));
        double stepSize = lr / biasCorrection1;
        for (int i = 0; i < parameters.size(); i++) {
            NDArray parameter = parameters.get(i);
            NDArray m = firstMoments.get(i);
            NDArray v = secondMoments.get(i);
            try (NDArray gradient = parameter.getGradient()) {
                update(parameter, gradient, m, v, lr, stepSize, biasCorrection2Sqrt);
            }
        }
    }

    private void update(NDArray parameter, NDArray gradient, NDArray m, NDArray v, double lr, double stepSize,
            double biasCorrection2Sqrt) {
        if (weightDecay != 0) {
            parameter.muli(1 - lr * weightDecay);
        }
        // torch: exp_avg.lerp_(grad, 1 - beta1), i.e. m + (1 - beta1) (g - m).
        try (NDArray delta = gradient.sub(m)) {
            m.addi(delta.muli(1 - beta1));
        }
        try (NDArray g2 = gradient.square()) {
            v.muli(beta2).addi(g2.muli(1 - beta2));
        }
        try (NDArray denom = v.sqrt(); NDArray update = m.div(denom.divi(biasCorrection2Sqrt).addi(eps))) {
            parameter.subi(update.muli(stepSize));
        }
    }

    /** Updates taken so far (torch's state "step"). */
    public long stepCount() {
        return step;
    }

    public List<NDArray> firstMoments() {
        return firstMoments;
    }

    public List<NDArray> secondMoments() {
        return secondMoments;
    }

    /** Restores the state a checkpoint saved: the moments are copied into place, the step count set. */
    public void restore(long stepCount, List<float[]> first, List<float[]> second) {
        if (first.size() != parameters.size() || second.size() != parameters.size()) {
            throw new IllegalArgumentException("optimizer state holds " + first.size() + " moments for "
                    + parameters.size() + " parameters");
        }
        for (int i = 0; i < parameters.size(); i++) {
            InPlaceCopy.copy(firstMoments.get(i), first.get(i));
            InPlaceCopy.copy(secondMoments.get(i), second.get(i));
        }
        this.step = stepCount;
    }
}
