package io.mixtune.trainer.dpo;

import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.MicroBatchMeans;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * TRL's DPO metrics under TRL's names: per micro-batch rewards/chosen and rewards/rejected (beta x the policy's
 * log-ratio to the reference), rewards/accuracies (the share of pairs whose chosen reward is the larger),
 * rewards/margins, logps/chosen and logps/rejected (summed completion log-probs), each a mean over its pairs; the
 * policy's logits at the completion tokens ({@link LogitMeans}): logits/chosen, logits/rejected, entropy and
 * mean_token_accuracy; and nll (mixtune's: the mean NLL of the chosen completion tokens). A step or an evaluation logs
 * each averaged over its micro-batches, and the loss averaged over pairs, as TRL does ({@link MicroBatchMeans}).
 * Validation writes them with TRL's eval_ prefix.
 */
public final class DpoMetrics {
    private final double beta;
    private final MicroBatchMeans means = new MicroBatchMeans();

    public DpoMetrics(double beta) {
        this.beta = beta;
    }

    /**
     * TRL 1.13 DPOTrainer's metrics of the policy's logits over one micro-batch's completion tokens (its
     * _compute_loss): the tokens of a side are pooled across the micro-batch (a sum over them divided by their count,
     * not a mean of per-pair means), 0 where there are none.
     *
     * @param chosen logits/chosen: the mean over the chosen completion tokens of each token's mean logit
     * @param rejected logits/rejected: the same over the rejected completion tokens
     * @param entropy the mean entropy (nats) of the policy's distribution over both sides' completion tokens
     * @param meanTokenAccuracy the share of chosen completion tokens that are their logits' argmax
     */
    public record LogitMeans(double chosen, double rejected, double entropy, double meanTokenAccuracy) {
        /**
         * @param statistics per target token, rows in order (chosen rows then rejected rows)
         * @param targetsPerRow each row's target tokens
         */
        static LogitMeans of(CausalLmLoss.TokenStatistics statistics, int[] targetsPerRow, int pairs) {
            double[] logitSums = new double[2];
            double entropySum = 0;
            int hits = 0;
            int[] tokens = new int[2];
            int token = 0;
            for (int row = 0; row < targetsPerRow.length; row++) {
                int side = row < pairs ? 0 : 1;
                for (int k = 0; k < targetsPerRow[row]; k++, token++) {
                    logitSums[side] += statistics.meanLogits()[token];
                    entropySum += statistics.entropies()[token];
                    hits += side == 0 && statistics.argmaxHits()[token] ? 1 : 0;
                    tokens[side]++;
                }
            }
            return new LogitMeans(ratio(logitSums[0], tokens[0]), ratio(logitSums[1], tokens[1]),
                    ratio(entropySum, tokens[0] + tokens[1]), ratio(hits, tokens[0]));
        }

        private static double ratio(double sum, int count) {
            return count == 0 ? 0 : sum / count;
        }
    }

    /** Adds one micro-batch: its terms and the reference log-probs it was scored against. */
    public void add(DpoStep.Terms terms, float[] reference) {
        double perPairSum = 0;
        for (float value : terms.perPairLoss()) {
            perPairSum += value;
        }
        add(terms.policy(), reference, perPairSum / terms.perPairLoss().length, terms.nll(), terms.logits());
    }

    /**
     * Adds one micro-batch.
     *
     * @param policy sequence log-probs, chosen rows then rejected rows
     * @param objective the micro-batch's loss, the mean over its pairs
     * @param logits the logits' metrics, or null where only log-probs are known (then not logged)
     */
    public void add(float[] policy, float[] reference, double objective, double meanNll, LogitMeans logits) {
        Map<String, Double> values = rewards(beta, policy, reference);
        if (logits != null) {
            values.put("logits/chosen", logits.chosen());
            values.put("logits/rejected", logits.rejected());
            values.put("entropy", logits.entropy());
            values.put("mean_token_accuracy", logits.meanTokenAccuracy());
        }
        values.put("nll", meanNll);
        means.add(values, objective, policy.length / 2);
    }

    /**
     * TRL's reward metrics of a micro-batch, each a mean over its pairs: rewards/chosen and rewards/rejected (beta x
     * policy - reference, float32 as TRL computes them, so that a tie stays a tie), rewards/accuracies (the share of
     * pairs whose chosen reward is the larger), rewards/margins, logps/chosen and logps/rejected (the policy's). The
     * reference-free methods (ORPO, CPO) pass zeros as the reference: their rewards are beta x the policy's log-prob.
     *
     * @param policy log-probs, chosen rows then rejected rows
     */
    public static Map<String, Double> rewards(double beta, float[] policy, float[] reference) {
        int n = policy.length / 2;
        double rewardsChosen = 0;
        double rewardsRejected = 0;
        double accurate = 0;
        double logpsChosen = 0;
        double logpsRejected = 0;
        for (int i = 0; i < n; i++) {
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
        return values;
    }

    /** A line for people about an evaluation of pairs: its loss, reward accuracy and margin. */
    public static String describeEvaluation(Map<String, Number> metrics) {
        return String.format(Locale.ROOT, "eval_loss %.4f  eval_rewards/accuracies %.3f  eval_rewards/margins %.4f",
                metrics.get("eval_loss").doubleValue(), metrics.get("eval_rewards/accuracies").doubleValue(),
                metrics.get("eval_rewards/margins").doubleValue());
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
