package io.mixtune.trainer.reward;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * TRL 1.13's RewardTrainer metrics under its names: per micro-batch the min, mean and max of all its rewards, the
 * share of pairs whose chosen reward is higher (accuracy) and the mean r_chosen - r_rejected (margin, without the data's
 * margins); a step or an evaluation logs each averaged over its micro-batches, as TRL's log() does.
 */
public final class RewardMetrics {
    private double minReward;
    private double meanReward;
    private double maxReward;
    private double accuracy;
    private double margin;
    private double lossTimesPairs;
    private long pairs;
    private int microBatches;

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
        minReward += min;
        meanReward += sum / rewards.length;
        maxReward += max;
        accuracy += (double) accurate / n;
        margin += difference / n;
        lossTimesPairs += loss * n;
        pairs += n;
        microBatches++;
    }

    /** TRL's names, in its order of logging: min_reward, mean_reward, max_reward, accuracy, margin. */
    public Map<String, Double> values() {
        Map<String, Double> values = new LinkedHashMap<>();
        double m = Math.max(1, microBatches);
        values.put("min_reward", minReward / m);
        values.put("mean_reward", meanReward / m);
        values.put("max_reward", maxReward / m);
        values.put("accuracy", accuracy / m);
        values.put("margin", margin / m);
        return values;
    }

    public double accuracy() {
        return accuracy / Math.max(1, microBatches);
    }

    public double margin() {
        return margin / Math.max(1, microBatches);
    }

    /** The loss averaged over pairs (transformers' evaluation loop weights each batch's loss by its size). */
    public double meanLoss() {
        return lossTimesPairs / Math.max(1, pairs);
    }
}
