package io.mixtune.merging.averaging;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import io.mixtune.model.nn.WithoutGrad;
import java.util.Map;

/**
 * Exponential moving average of the trainable weights, ema = decay * ema + (1 - decay) * w after each optimizer step,
 * started as a copy of the weights. The decay schedule is timm's {@code ModelEmaV3.get_decay}: no averaging for the
 * first {@code updateAfterStep + 1} steps (the EMA just follows the weights), then optionally a warmup
 * {@code 1 - (1 + s / gamma)^-power} (with s the steps since then) capped at {@code decay} and floored at
 * {@code minDecay}, so that early, still-random weights do not dominate a 0.9999 average for thousands of steps.
 */
public final class EmaAverager {

    /**
     * timm ModelEmaV3's arguments, same names and defaults.
     *
     * @param decay the decay once warmed up, in [0, 1)
     * @param warmup whether the decay warms up as {@code 1 - (1 + s / warmupGamma)^-warmupPower}
     * @param updateAfterStep steps during which the average only copies the weights
     * @param minDecay lower bound of the warmed-up decay, in [0, 1) (above decay, it is the decay)
     */
    public record Config(double decay, boolean warmup, double warmupGamma, double warmupPower, long updateAfterStep,
            double minDecay) {
        public Config {
            if (!(decay >= 0 && decay < 1)) {
                throw new IllegalArgumentException("ema decay must lie in [0, 1), got " + decay);
            }
            if (!(warmupGamma > 0) || !(warmupPower > 0)) {
                throw new IllegalArgumentException("ema warmup gamma and power must be > 0, got " + warmupGamma
                        + " and " + warmupPower);
            }
            if (updateAfterStep < 0) {
                throw new IllegalArgumentException("ema update_after_step must be >= 0, got " + updateAfterStep);
            }
            // Above decay too, as timm takes it: the warmed-up decay is then min_decay (unused without warmup).
            if (!(minDecay >= 0 && minDecay < 1)) {
                throw new IllegalArgumentException("ema min_decay must lie in [0, 1), got " + minDecay);
            }
        }

        /** The decay of the update after optimizer step {@code step} (timm's get_decay). */
        public double decayAt(long step) {
            long s = Math.max(0, step - updateAfterStep - 1);
            if (s == 0) {
                return 0.0;
            }
            if (!warmup) {
                return decay;
            }
            double warm = 1 - Math.pow(1 + s / warmupGamma, -warmupPower);
            return Math.max(Math.min(warm, decay), minDecay);
        }

        /** A constant decay from the second step on (timm's defaults: no warmup, gamma 1, power 2/3). */
        public static Config constant(double decay) {
            return new Config(decay, false, 1.0, 2.0 / 3.0, 0, 0.0);
        }

        /** timm's warmup with gamma 1 and the given power: 2/3 reaches 0.999 at 31.6K steps, 3/4 at 10K. */
        public static Config warmingUp(double decay, double power) {
            return new Config(decay, true, 1.0, power, 0, 0.0);
        }
    }

    private final Config config;
    private final TrainableWeights average;

    /** Starts the average as a copy of {@code initial}. */
    public EmaAverager(Config config, Map<String, float[]> initial) {
        this.config = config;
        this.average = TrainableWeights.copyOf(initial);
    }

    /** The decay applied by {@link #update} at optimizer step {@code step} (timm's get_decay). */
    public double decayAt(long step) {
        return config.decayAt(step);
    }

    /** Folds in the weights after optimizer step {@code step}, by {@link #updated} on the host. */
    public void update(long step, Map<String, float[]> weights) {
        average.requireSameLayout(weights);
        double decay = decayAt(step);
        try (NDManager host = NDManager.newBaseManager(Device.cpu())) {
            average.tensors().forEach((name, ema) -> {
                float[] updated = updated(host.create(ema), host.create(weights.get(name)), decay).toFloatArray();
                System.arraycopy(updated, 0, ema, 0, ema.length);
            });
        }
    }

    /**
     * {@code decay * average + (1 - decay) * weights} as a new float32 array on their device, the EMA's update wherever
     * it runs. In float64 with a separate multiply and add, rounded once to float32: exactly Java's
     * {@code (float) (decay * ema + (1 - decay) * w)}, whose products round in double before the sum; float32 math
     * rounds differently, and so does a fused multiply-add (libtorch's {@code add(other, alpha)} may fuse), which skips
     * a product's rounding.
     */
    public static NDArray updated(NDArray average, NDArray weights, double decay) {
        requireFloat32(average, weights);
        return WithoutGrad.get(() -> {
            // In place on the float64 copies: two temporaries, not five. The factors are host scalars, which a CUDA
            // kernel takes as arguments: an array made on the device would be an upload, and libtorch waits for each.
            try (NDManager host = NDManager.newBaseManager(Device.cpu());
                    NDArray sum = average.toType(DataType.FLOAT64, false);
                    NDArray added = weights.toType(DataType.FLOAT64, false)) {
                sum.muli(host.create(decay)).addi(added.muli(host.create(1 - decay)));
                return sum.toType(DataType.FLOAT32, false);
            }
        });
    }

    static void requireFloat32(NDArray... arrays) {
        for (NDArray array : arrays) {
            if (array.getDataType() != DataType.FLOAT32) {
                throw new IllegalArgumentException("weight averages are kept in float32, got a "
                        + array.getDataType() + " array of shape " + array.getShape());
            }
        }
    }

    /** A copy of the current average. */
    public Map<String, float[]> averaged() {
        return average.snapshot();
    }
}
