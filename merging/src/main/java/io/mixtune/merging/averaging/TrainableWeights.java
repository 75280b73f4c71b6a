package io.mixtune.merging.averaging;

import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A private copy of a model's trainable tensors by name, which an averager updates in place. Every update must bring
 * the same names with the same lengths as the first: a silently skipped or reshaped tensor would average nonsense.
 */
final class TrainableWeights {
    private final Map<String, float[]> values;

    private TrainableWeights(Map<String, float[]> values) {
        this.values = values;
    }

    static TrainableWeights copyOf(Map<String, float[]> weights) {
        if (weights == null || weights.isEmpty()) {
            throw new IllegalArgumentException("no weights to average: expected at least one named tensor");
        }
        Map<String, float[]> copy = new LinkedHashMap<>();
        weights.forEach((name, tensor) -> copy.put(name, tensor.clone()));
        return new TrainableWeights(copy);
    }

    static TrainableWeights zerosLike(Map<String, float[]> weights) {
        TrainableWeights zeros = copyOf(weights);
        zeros.values.values().forEach(tensor -> Arrays.fill(tensor, 0f));
        return zeros;
    }

    /** The tensors of this set, for updating in place; same iteration order as the first update's map. */
    Map<String, float[]> tensors() {
        return values;
    }

    void requireSameLayout(Map<String, float[]> weights) {
        if (!weights.keySet().equals(values.keySet())) {
            throw new IllegalArgumentException("the weights changed names since averaging started: expected "
                    + values.size() + " tensors " + abbreviate(values.keySet()) + ", got " + weights.size() + " "
                    + abbreviate(weights.keySet()));
        }
        values.forEach((name, tensor) -> {
            if (weights.get(name).length != tensor.length) {
                throw new IllegalArgumentException("tensor '" + name + "' has " + weights.get(name).length
                        + " elements, expected " + tensor.length + " as when averaging started");
            }
        });
    }

    /** A deep copy that later updates do not change. */
    Map<String, float[]> snapshot() {
        Map<String, float[]> copy = new LinkedHashMap<>();
        values.forEach((name, tensor) -> copy.put(name, tensor.clone()));
        return Collections.unmodifiableMap(copy);
    }

    private static String abbreviate(Iterable<String> names) {
        StringBuilder out = new StringBuilder("[");
        int shown = 0;
        for (String name : names) {
            if (shown == 3) {
                return out.append(", ...]").toString();
            }
            out.append(shown++ == 0 ? "" : ", ").append(name);
        }
        return out.append(']').toString();
    }
}
