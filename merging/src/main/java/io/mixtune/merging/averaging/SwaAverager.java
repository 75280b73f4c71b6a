package io.mixtune.merging.averaging;

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
    }

    private final Config config;
    private TrainableWeights average;
    private long count;

    public SwaAverager(Config config) {
        this.config = config;
    }

    /** Whether step {@code step} is one that {@link #update} averages. */
    public boolean averages(long step) {
        return step >= config.startStep() && (step - config.startStep()) % config.every() == 0;
    }

    /** Folds in the weights after step {@code step} if it is an averaging step; returns whether it was. */
    public boolean update(long step, Map<String, float[]> weights) {
        if (!averages(step)) {
            return false;
        }
        if (average == null) {
            average = TrainableWeights.zerosLike(weights);
        }
        average.requireSameLayout(weights);
        long n = count;
        average.tensors().forEach((name, avg) -> {
            float[] w = weights.get(name);
            for (int i = 0; i < avg.length; i++) {
                avg[i] += (w[i] - avg[i]) / (n + 1);
            }
        });
        count++;
        return true;
    }

    /**
     * Puts back the average a checkpoint saved after step {@code step}; the snapshot count follows from the step, as
     * every averaging step up to it was folded in.
     */
    public void restore(long step, Map<String, float[]> savedAverage) {
        average = TrainableWeights.copyOf(savedAverage);
        count = step < config.startStep() ? 0 : (step - config.startStep()) / config.every() + 1;
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
