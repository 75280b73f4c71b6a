package io.mixtune.trainer.orpo;

import io.mixtune.trainer.dpo.DpoMetrics;
import io.mixtune.trainer.run.MicroBatchMeans;
import java.util.Map;

/**
 * TRL 1.13's ORPOTrainer and CPOTrainer metrics under their names, per micro-batch (get_batch_loss_metrics):
 * rewards/chosen and rewards/rejected (beta x the policy's log-prob of the answer, no reference), rewards/accuracies,
 * rewards/margins, logps/chosen and logps/rejected (averaged per token where the method averages, else summed), each a
 * mean over the pairs ({@link DpoMetrics#rewards} with no reference); logits/rejected and logits/chosen (here the mean over the side's completion tokens of each
 * token's mean logit, as mixtune's DPO logs them); nll_loss; and ORPO's log_odds_ratio (the mean of log sigmoid(log
 * odds)) and log_odds_chosen (the mean log odds). A step or an evaluation logs each averaged over its micro-batches, and
 * the loss averaged over pairs ({@link MicroBatchMeans}).
 */
public final class OrpoMetrics {
    private final double beta;
    private final MicroBatchMeans means = new MicroBatchMeans();

    public OrpoMetrics(double beta) {
        this.beta = beta;
    }

    /**
     * Adds one micro-batch.
     *
     * @param chosen the policy's log-prob of each chosen answer, as the loss read it
     * @param logOdds ORPO's log odds per pair, null for CPO
     * @param logSigmoidOdds ORPO's log sigmoid(log odds) per pair, null for CPO
     * @param logits the means of the logits at the chosen and rejected completion tokens, null where not measured
     * @param loss the micro-batch's objective
     */
    public void add(float[] chosen, float[] rejected, double nll, float[] logOdds, float[] logSigmoidOdds,
            double[] logits, double loss) {
        float[] policy = new float[2 * chosen.length];
        System.arraycopy(chosen, 0, policy, 0, chosen.length);
        System.arraycopy(rejected, 0, policy, chosen.length, rejected.length);
        Map<String, Double> values = DpoMetrics.rewards(beta, policy, new float[policy.length]);
        if (logits != null) {
            values.put("logits/rejected", logits[1]);
            values.put("logits/chosen", logits[0]);
        }
        values.put("nll_loss", nll);
        if (logOdds != null) {
            values.put("log_odds_ratio", mean(logSigmoidOdds));
            values.put("log_odds_chosen", mean(logOdds));
        }
        means.add(values, loss, chosen.length);
    }

    private static double mean(float[] values) {
        double sum = 0;
        for (float value : values) {
            sum += value;
        }
        return sum / values.length;
    }

    /** The metrics by TRL name, each the mean over the micro-batches. */
    public Map<String, Double> values() {
        return means.values();
    }

    /** The loss averaged over pairs: eval_loss. */
    public double meanLoss() {
        return means.meanLoss();
    }
}
