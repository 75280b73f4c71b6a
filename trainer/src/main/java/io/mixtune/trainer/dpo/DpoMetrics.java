package io.mixtune.trainer.dpo;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * TRL's DPO metrics over the pairs seen, under TRL's names: rewards/chosen and rewards/rejected (beta x the policy's
 * log-ratio to the reference), rewards/accuracies (the share of pairs whose chosen reward is the larger),
 * rewards/margins, logps/chosen and logps/rejected (summed completion log-probs), each a mean over pairs; and loss,
 * the mean of the micro-batch objectives. Validation writes them with TRL's eval_ prefix.
 */
public final class DpoMetrics {
    private final double beta;
    private int pairs;
    private int microBatches;
    private double rewardsChosen;
    private double rewardsRejected;
    private double accurate;
    private double logpsChosen;
    private double logpsRejected;
    private double loss;
    private double nll;

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
     * @param policy sequence log-probs, chosen rows then rejected rows
     * @param objective the micro-batch's loss
     */
    public void add(float[] policy, float[] reference, double objective, double meanNll) {
        int n = policy.length / 2;
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
        pairs += n;
        microBatches++;
        loss += objective;
        nll += meanNll;
    }

    /** The metrics by TRL name (loss being the mean DPO loss of the pairs, without the SFT and router terms). */
    public Map<String, Double> values() {
        Map<String, Double> values = new LinkedHashMap<>();
        int p = Math.max(1, pairs);
        values.put("rewards/chosen", rewardsChosen / p);
        values.put("rewards/rejected", rewardsRejected / p);
        values.put("rewards/accuracies", accurate / p);
        values.put("rewards/margins", (rewardsChosen - rewardsRejected) / p);
        values.put("logps/chosen", logpsChosen / p);
        values.put("logps/rejected", logpsRejected / p);
        values.put("nll", nll / Math.max(1, microBatches));
        return values;
    }

    public double accuracy() {
        return accurate / Math.max(1, pairs);
    }

    public double margin() {
        return (rewardsChosen - rewardsRejected) / Math.max(1, pairs);
    }

    /** The mean per-pair DPO loss (micro-batch means averaged). */
    public double dpoLoss() {
        return loss / Math.max(1, microBatches);
    }

    /** Writes the metrics into a metrics.jsonl record, names prefixed (eval_ for validation). */
    public void put(ObjectNode record, String prefix) {
        values().forEach((name, value) -> record.put(prefix + name, value));
    }
}
