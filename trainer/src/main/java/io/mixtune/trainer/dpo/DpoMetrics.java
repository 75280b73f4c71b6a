package io.mixtune.trainer.dpo;

import io.mixtune.trainer.run.MicroBatchMeans;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * TRL's DPO metrics under TRL's names: per micro-batch rewards/chosen and rewards/rejected (beta x the policy's
 * log-ratio to the reference), rewards/accuracies (the share of pairs whose chosen reward is the larger),
 * rewards/margins, logps/chosen and logps/rejected (summed completion log-probs), each a mean over its pairs, and nll;
 * a step or an evaluation logs each averaged over its micro-batches, and the loss averaged over pairs, as TRL does
 * ({@link MicroBatchMeans}). Validation writes them with TRL's eval_ prefix.
 */
public final class DpoMetrics {
    private final double beta;
    private final MicroBatchMeans means = new MicroBatchMeans();

    public DpoMetrics(double beta) {
        this.beta = beta;
    }

    /** Adds one micro-batch: its terms and the reference log-probs it was scored against. */
    public void add(DpoStep.Terms terms, float[] reference) {
        double perPairSum = 0;
        for (float value : terms.perPairLoss()) {
            perPairSum += value;
        }
        add(terms.policy(), reference, perPairSum / terms.perPairLoss().length, terms.nll());
    }

    /**
     * Adds one micro-batch.
     *
     * @param policy sequence log-probs, chosen rows then rejected rows
     * @param objective the micro-batch's loss, the mean over its pairs
     */
    public void add(float[] policy, float[] reference, double objective, double meanNll) {
        int n = policy.length / 2;
        double rewardsChosen = 0;
        double rewardsRejected = 0;
        double accurate = 0;
        double logpsChosen = 0;
        double logpsRejected = 0;
        for (int i = 0; i < n; i++) {
            // float32 as TRL computes them, so that a tie of rewards stays a tie
            float chosen = (float) beta * (policy[i] - reference[i]);
            float rejected = (float) beta * (policy[n + i] - reference[n + i]);
            rewardsChosen += chosen;
            rewardsRejected += rejected;
            accurate += chosen > rejected ? 1 : 0;
            logpsChosen += policy[i];
            logpsRejected += policy[n + i];
        }
        Map<String, Double> values = new LinkedHashMap<>();
        values.put("rewards/chosen", rewardsChosen / n);
        values.put("rewards/rejected", rewardsRejected / n);
        values.put("rewards/accuracies", accurate / n);
        values.put("rewards/margins", (rewardsChosen - rewardsRejected) / n);
        values.put("logps/chosen", logpsChosen / n);
        values.put("logps/rejected", logpsRejected / n);
        values.put("nll", meanNll);
        means.add(values, objective, n);
    }

    /** The metrics by TRL name, each the mean over the micro-batches. */
    public Map<String, Double> values() {
        return means.values();
    }

    public double accuracy() {
        return means.mean("rewards/accuracies");
    }

    public double margin() {
        return means.mean("rewards/margins");
    }

    /** The loss averaged over pairs: eval_loss. */
    public double meanLoss() {
        return means.meanLoss();
    }
}
