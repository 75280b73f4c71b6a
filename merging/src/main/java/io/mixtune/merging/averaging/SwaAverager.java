package io.mixtune.merging.averaging;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import io.mixtune.model.nn.WithoutGrad;
import java.util.Map;

/**
 * Stochastic weight averaging (Izmailov et al. 2018): a uniform running average of the weights taken every
 * {@code every} steps from {@code startStep} on, as torch.optim.swa_utils.AveragedModel computes it,
 * avg += (w - avg) / (n + 1). Pair it with {@link SwaLearningRate} for the constant or cyclic SWA learning rate.
 */
public final class SwaAverager {

    /** @param startStep first step averaged; @param every steps between two averaged snapshots */
    public record Config(long startStep, long every) {
        public Config {
            if (startStep < 0) {
                throw new IllegalArgumentException("swa_start must be >= 0, got " + startStep);
            }
            if (every <= 0) {
                throw new IllegalArgumentException("swa_every must be a positive number of steps, got " + every);
            }
        }

        /**
         * swa_start as a recipe writes it: a fraction of the run in [0, 1) (0.75: the last quarter), or a step number
         * (a whole number >= 1). A fraction gives floor(fraction * totalSteps).
         */
        public static Config of(double swaStart, long every, long totalSteps) {
            long start;
            if (swaStart >= 0 && swaStart < 1) {
                start = (long) Math.floor(swaStart * totalSteps);
            } else if (swaStart >= 1 && swaStart == Math.rint(swaStart)) {
                start = (long) swaStart;
            } else {
                throw new IllegalArgumentException("swa_start must be a fraction of the run in [0, 1) or a whole step"
                        + " number, got " + swaStart);
            }
            return new Config(start, every);
        }

        /** Whether step {@code step} is one that the average folds in. */
        public boolean averages(long step) {
            return step >= startStep && (step - startStep) % every == 0;
        }

        /**
         * The first step the average folds in. Steps count from 1, so a start of 0 (swa_start 0.0) first averages at
         * step {@code every}.
         */
        public long firstAveragedStep() {
            return startStep == 0 ? every : startStep;
        }

        /** How many snapshots the average holds after step {@code step}: every averaging step from 1 up to it. */
        public long countAfter(long step) {
            long first = firstAveragedStep();
            return step < first ? 0 : (step - first) / every + 1;
        }
    }

    private final Config config;
    private TrainableWeights average;
    private long count;

    public SwaAverager(Config config) {
        this.config = config;
    }

    /** Whether step {@code step} is one that {@link #update} averages. */
    public boolean averages(long step) {
        return config.averages(step);
    }

    /**
     * Folds in the weights after step {@code step} if it is an averaging step, by {@link #fold} on the host; returns
     * whether it was.
     */
    public boolean update(long step, Map<String, float[]> weights) {
        if (!averages(step)) {
            return false;
        }
        if (average == null) {
            average = TrainableWeights.zerosLike(weights);
        }
        average.requireSameLayout(weights);
        try (NDManager host = NDManager.newBaseManager(Device.cpu())) {
            average.tensors().forEach((name, avg) -> {
                NDArray folded = host.create(avg);
                fold(folded, host.create(weights.get(name)), host.full(new Shape(), count + 1));
                System.arraycopy(folded.toFloatArray(), 0, avg, 0, avg.length);
            });
        }
        count++;
        return true;
    }

    /**
     * Puts back the average a checkpoint saved after step {@code step}; the snapshot count follows from the step, as
     * every averaging step up to it was folded in.
     */
    public void restore(long step, Map<String, float[]> savedAverage) {
        average = TrainableWeights.copyOf(savedAverage);
        count = config.countAfter(step);
    }

    /**
     * Folds {@code weights} into {@code average} in place as the {@code n}-th snapshot,
     * {@code average += (weights - average) / n}, the SWA's update wherever it runs: in float32 as Java's float math.
     * {@code n} is a 0-dim float32 array on the average's device (made there with {@code full}, not uploaded): CUDA
     * turns a division by a host scalar into a multiplication by its reciprocal, which rounds differently.
     */
    public static void fold(NDArray average, NDArray weights, NDArray n) {
        EmaAverager.requireFloat32(average, weights, n);
        WithoutGrad.get(() -> {
            try (NDArray step = weights.sub(average)) {
                step.divi(n);
                return average.addi(step);
            }
        });
    }

    /** How many snapshots the average holds. */
    public long count() {
        return count;
    }

    /** A copy of the current average. */
    public Map<String, float[]> averaged() {
        if (average == null) {
            throw new IllegalStateException("no SWA average yet: the first averaged step is " + config.startStep());
        }
        return average.snapshot();
    }
}
