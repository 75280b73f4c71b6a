package io.mixtune.trainer.reward;

import io.mixtune.trainer.run.MicroBatchMeans;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * TRL 1.13's RewardTrainer metrics under its names: per micro-batch the min, mean and max of all its rewards, the
 * share of pairs whose chosen reward is higher (accuracy) and the mean r_chosen - r_rejected (margin, without the data's
 * margins); a step or an evaluation logs each averaged over its micro-batches, as TRL's log() does ({@link
 * MicroBatchMeans}).
 */
public final class RewardMetrics {
    private final MicroBatchMeans means = new MicroBatchMeans();

    /**
     * Adds one micro-batch.
     *
     * @param rewards chosen rows then rejected rows
     * @param loss the micro-batch's loss (evaluation reports its mean over the pairs)
     */
    public void add(float[] rewards, double loss) {
        int n = rewards.length / 2;
        double min = Double.POSITIVE_INFINITY;
        double max = Double.NEGATIVE_INFINITY;
        double sum = 0;
        for (float r : rewards) {
            min = Math.min(min, r);
            max = Math.max(max, r);
            sum += r;
        }
        int accurate = 0;
        double difference = 0;
        for (int i = 0; i < n; i++) {
            accurate += rewards[i] > rewards[n + i] ? 1 : 0;
            difference += rewards[i] - rewards[n + i];
        }
        Map<String, Double> values = new LinkedHashMap<>(); // TRL's order of logging
        values.put("min_reward", min);
        values.put("mean_reward", sum / rewards.length);
        values.put("max_reward", max);
        values.put("accuracy", (double) accurate / n);
        values.put("margin", difference / n);
        means.add(values, loss, n);
    }

    /** TRL's names, in its order of logging: min_reward, mean_reward, max_reward, accuracy, margin. */
    public Map<String, Double> values() {
        return means.values();
    }

    public double accuracy() {
        return means.mean("accuracy");
    }

    public double margin() {
        return means.mean("margin");
    }

    /** The loss averaged over pairs (transformers' evaluation loop weights each batch's loss by its size). */
    public double meanLoss() {
        return means.meanLoss();
    }
}
