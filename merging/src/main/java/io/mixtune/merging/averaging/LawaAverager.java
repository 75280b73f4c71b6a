package io.mixtune.merging.averaging;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import io.mixtune.model.nn.WithoutGrad;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.Map;

/**
 * Latest weight averaging (LaWA, Kaddour 2022): the uniform average of the latest {@code k} checkpoints, one kept every
 * {@code every} steps. Unlike SWA it forgets: a snapshot leaves the average once k newer ones exist. Holds k copies of
 * the trainable weights, which for LoRA adapters is a few megabytes each.
 */
public final class LawaAverager {

    /** @param k how many of the latest snapshots are averaged; @param every steps between two snapshots */
    public record Config(int k, long every) {
        public Config {
            if (k <= 0) {
                throw new IllegalArgumentException("lawa k must be a positive number of checkpoints, got " + k);
            }
            if (every <= 0) {
                throw new IllegalArgumentException("lawa_every must be a positive number of steps, got " + every);
            }
        }
    }

    private final Config config;
    private final Deque<TrainableWeights> latest = new ArrayDeque<>();

    public LawaAverager(Config config) {
        this.config = config;
    }

    /** Keeps a snapshot of the weights after step {@code step} if it is a multiple of {@code every}. */
    public boolean update(long step, Map<String, float[]> weights) {
        if (step % config.every() != 0) {
            return false;
        }
        if (!latest.isEmpty()) {
            latest.peekFirst().requireSameLayout(weights);
        }
        latest.addLast(TrainableWeights.copyOf(weights));
        if (latest.size() > config.k()) {
            latest.removeFirst();
        }
        return true;
    }

    /** The kept snapshots, oldest first (copies), for a checkpoint to save. */
    public List<Map<String, float[]>> snapshots() {
        List<Map<String, float[]>> copies = new ArrayList<>();
        latest.forEach(snapshot -> copies.add(snapshot.snapshot()));
        return copies;
    }

    /** Puts back the snapshots {@link #snapshots} gave, oldest first. */
    public void restore(List<Map<String, float[]>> snapshots) {
        latest.clear();
        snapshots.forEach(snapshot -> latest.addLast(TrainableWeights.copyOf(snapshot)));
        while (latest.size() > config.k()) {
            latest.removeFirst();
        }
    }

    /** How many snapshots the average holds now (at most k). */
    public int count() {
        return latest.size();
    }

    /**
     * The uniform average of {@code snapshots} (oldest first) as a new float32 array on their device, LaWA's average
     * wherever it runs: summed in float64 in that order from zero, divided, rounded once to float32, as a Java loop
     * over a {@code double[]} sum gives it (the count an array made on the device, as in {@link SwaAverager#fold}).
     */
    public static NDArray mean(List<NDArray> snapshots) {
        EmaAverager.requireFloat32(snapshots.toArray(NDArray[]::new));
        NDArray first = snapshots.get(0);
        return WithoutGrad.get(() -> {
            try (NDArray sum = first.getManager().zeros(first.getShape(), DataType.FLOAT64);
                    NDArray count = first.getManager().full(new Shape(), snapshots.size(), DataType.FLOAT64)) {
                for (NDArray snapshot : snapshots) {
                    try (NDArray snapshot64 = snapshot.toType(DataType.FLOAT64, false)) {
                        sum.addi(snapshot64);
                    }
                }
                sum.divi(count);
                return sum.toType(DataType.FLOAT32, false);
            }
        });
    }

    /** The uniform average of the kept snapshots, by {@link #mean} on the host. */
    public Map<String, float[]> averaged() {
        if (latest.isEmpty()) {
            throw new IllegalStateException("no LaWA snapshot yet: one is kept every " + config.every() + " steps");
        }
        TrainableWeights mean = TrainableWeights.zerosLike(latest.peekFirst().tensors());
        try (NDManager host = NDManager.newBaseManager(Device.cpu())) {
            mean.tensors().forEach((name, out) -> {
                float[] values = mean(latest.stream().map(snapshot -> host.create(snapshot.tensors().get(name)))
                        .toList()).toFloatArray();
                System.arraycopy(values, 0, out, 0, out.length);
            });
        }
        return mean.snapshot();
    }
}
