package io.mixtune.trainer.optim;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.Shape;
import io.mixtune.model.nn.InPlaceCopy;
import java.util.List;

/**
 * AdamW as {@code torch.optim.AdamW} computes it (Loshchilov and Hutter 2019): decoupled weight decay applied to the
 * parameter first, moments m and v, bias correction, and eps added outside the square root of the corrected v. DJL's
 * fused adamUpdate places eps differently and clips one-sided, so this is written out in NDArray ops, run outside any
 * gradient collector (PyTorch's no_grad), updating the parameters in place.
 *
 * <p>The moments of all parameters live in one flat array each (parameter after parameter, as {@link FlatGradients}
 * lays out the gradients), and the update is computed once over all elements into a flat buffer whose runs, shaped
 * as the parameters, are subtracted from them: a handful of libtorch calls per step plus one or two per parameter,
 * where the per-array form made some twenty-five per parameter. The operations are the per-array ones, elementwise,
 * so every value has the same bits.
 */
public final class AdamW {
    private static final NDIndex ALL = new NDIndex("...");

    private final List<NDArray> parameters;
    private final NDArray firstMoment;
    private final NDArray secondMoment;
    /** Each step's update, computed in place so that {@link #updates} stay views of it. */
    private final NDArray update;
    private final List<NDArray> firstMoments;
    private final List<NDArray> secondMoments;
    private final List<NDArray> updates;
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
        List<Shape> shapes = this.parameters.stream().map(NDArray::getShape).toList();
        long total = shapes.stream().mapToLong(Shape::size).sum();
        NDManager manager = this.parameters.get(0).getManager();
        NDArray like = this.parameters.get(0);
        firstMoment = manager.zeros(new Shape(total), like.getDataType(), like.getDevice());
        secondMoment = manager.zeros(new Shape(total), like.getDataType(), like.getDevice());
        update = manager.zeros(new Shape(total), like.getDataType(), like.getDevice());
        firstMoments = FlatGradients.views(firstMoment, shapes);
        secondMoments = FlatGradients.views(secondMoment, shapes);
        updates = FlatGradients.views(update, shapes);
    }

    /** One update with the gradients the parameters hold now. */
    public void step(double lr) {
        try (NDArray gradients = FlatGradients.of(parameters)) {
            step(lr, gradients);
        }
    }

    /** One update with {@code gradients}, the parameters' gradients laid out as {@link FlatGradients#of} does. */
    public void step(double lr, NDArray gradients) {
        step++;
        double biasCorrection1 = 1 - Math.pow(beta1, step);
        double biasCorrection2Sqrt = Math.sqrt(1 - Math.pow(beta2, step));
        double stepSize = lr / biasCorrection1;
        NDArray m = firstMoment;
        NDArray v = secondMoment;
        // torch: exp_avg.lerp_(grad, 1 - beta1), i.e. m + (1 - beta1) (g - m).
        try (NDArray delta = gradients.sub(m)) {
            m.addi(delta.muli(1 - beta1));
        }
        try (NDArray g2 = gradients.square()) {
            v.muli(beta2).addi(g2.muli(1 - beta2));
        }
        try (NDArray denom = v.sqrt()) {
            denom.divi(biasCorrection2Sqrt).addi(eps);
            // m / denom written into the update buffer: a copy of m divided in place, the same quotient.
            update.set(ALL, m);
            update.divi(denom).muli(stepSize);
        }
        if (weightDecay != 0) {
            // One scalar array for all parameters. float32 already: libtorch rounds a double scalar to the float32
            // of the tensor it multiplies before multiplying (a cast per call), the rounding Java's cast makes.
            try (NDArray decay = parameters.get(0).getManager().create((float) (1 - lr * weightDecay))) {
                for (NDArray parameter : parameters) {
                    parameter.muli(decay);
                }
            }
        }
        for (int i = 0; i < parameters.size(); i++) {
            parameters.get(i).subi(updates.get(i));
        }
    }

    /** Updates taken so far (torch's state "step"). */
    public long stepCount() {
        return step;
    }

    /** exp_avg of each parameter, shaped as it: views of the flat moment. */
    public List<NDArray> firstMoments() {
        return firstMoments;
    }

    /** exp_avg_sq of each parameter, shaped as it: views of the flat moment. */
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
