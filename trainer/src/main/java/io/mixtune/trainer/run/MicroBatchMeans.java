package io.mixtune.trainer.run;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Metrics averaged as TRL's trainers log them: each micro-batch appends its own values (means over its pairs) and a
 * step or an evaluation logs each name's mean over those micro-batches, every micro-batch counting the same
 * (Trainer.log of the _metrics lists); the loss of an evaluation is instead the mean over pairs, transformers'
 * evaluation loop weighting each batch's loss by its size. A name a micro-batch does not log (KTO's rewards/chosen of
 * a batch without desirable examples) is averaged over the micro-batches that logged it, as TRL's lists hold only those.
 */
public final class MicroBatchMeans {
    private final Map<String, Double> sums = new LinkedHashMap<>();
    private final Map<String, Integer> counts = new LinkedHashMap<>();
    private double lossTimesPairs;
    private long pairs;

    /**
     * An evaluation's record under TRL's names: eval_loss (the mean over pairs or examples) first, then every metric
     * with the eval_ prefix.
     */
    public static Map<String, Number> evaluation(double meanLoss, Map<String, Double> values) {
        Map<String, Number> out = new LinkedHashMap<>();
        out.put("eval_loss", meanLoss);
        values.forEach((name, value) -> out.put("eval_" + name, value));
        return out;
    }

    /**
     * Adds one micro-batch.
     *
     * @param values its metrics by name, in the order they are to be logged
     * @param loss its loss, the mean over its pairs
     */
    public void add(Map<String, Double> values, double loss, int pairs) {
        values.forEach((name, value) -> {
            sums.merge(name, value, Double::sum);
            counts.merge(name, 1, Integer::sum);
        });
        lossTimesPairs += loss * pairs;
        this.pairs += pairs;
    }

    /** Each metric's mean over the micro-batches that logged it, in the order they first did. */
    public Map<String, Double> values() {
        Map<String, Double> means = new LinkedHashMap<>();
        sums.forEach((name, sum) -> means.put(name, sum / counts.get(name)));
        return means;
    }

    /** One metric's mean over the micro-batches that logged it (0 before the first). */
    public double mean(String name) {
        return sums.getOrDefault(name, 0.0) / counts.getOrDefault(name, 1);
    }

    /** The loss averaged over pairs. */
    public double meanLoss() {
        return lossTimesPairs / Math.max(1, pairs);
    }
}
