package io.mixtune.trainer.orpo;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Scalars;
import io.mixtune.trainer.dpo.PreferenceBatch;
import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.DecoderBackward;
import io.mixtune.trainer.run.Objective;
import io.mixtune.trainer.run.OptimizerStep;
import io.mixtune.trainer.run.StepContext;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalLong;

/**
 * One ORPO or CPO optimizer step: per micro-batch the policy's log-probs of chosen and rejected in one forward pass (the
 * rows DPO's micro-batch lays out, {@link PreferenceBatch}), the loss ({@link OrpoLoss}) with its NLL term, backward;
 * the loop then updates as for every method ({@link OptimizerStep}). No reference pass. As TRL (HF's Trainer without
 * num_items_in_batch), a micro-batch's objective is its loss plus the router coefficient x its load-balancing loss, and
 * the step takes the mean of the micro-batches' objectives.
 */
public final class OrpoStep {
    private OrpoStep() {}

    /**
     * What one micro-batch computed, at the weights before the update.
     *
     * @param objective the scalar to differentiate (in the micro-batch's manager)
     * @param chosen the policy's log-prob of each chosen answer as the loss read it (averaged or summed)
     * @param rejected the same of each rejected answer
     * @param nll the NLL term (0 where its weight is 0, as TRL logs it)
     * @param logOdds ORPO's log odds per pair, null for CPO
     * @param logSigmoidOdds ORPO's log sigmoid(log odds) per pair, null for CPO
     * @param logits the mean logit at the chosen, then the rejected completion tokens
     * @param loadBalancing the router loss before its coefficient, 0 for a dense model
     */
    public record Terms(NDArray objective, float[] chosen, float[] rejected, double nll, float[] logOdds,
            float[] logSigmoidOdds, double[] logits, double loadBalancing) {}

    /** A micro-batch of pairs as the method reads them: every token labelled where its NLL reads the prompt (ORPO). */
    static PreferenceBatch batchOf(OrpoLoss.Method method, List<PreferenceSample> pairs,
            int[] indices, long padId) {
        List<PreferenceSample> samples = Arrays.stream(indices).mapToObj(pairs::get)
                .toList();
        return PreferenceBatch.of(samples, indices, padId, method.nllReadsPrompt());
    }

    /** The micro-batch's objective with the policy as it is (adapters and training flag as the caller left them). */
    public static Terms of(CausalLm model, OrpoLoss.Method method, PreferenceBatch batch, double auxCoefficient,
            NDManager manager) {
        CausalLmLoss.TokenStatistics[] statistics = new CausalLmLoss.TokenStatistics[1];
        CausalLmLoss.Forward forward = CausalLmLoss.forward(model, batch.rows(), manager, OptionalLong.empty());
        NDArray targets = CausalLmLoss.targetLogProbs(model, forward.states(), batch.rows(), manager, statistics);
        Terms terms = fromLogProbs(method, batch, targets, statistics[0], manager);
        if (forward.loadBalancing() == null) {
            return terms;
        }
        NDArray objective = auxCoefficient > 0
                ? terms.objective().add(Scalars.times(forward.loadBalancing(), auxCoefficient)) : terms.objective();
        return new Terms(objective, terms.chosen(), terms.rejected(), terms.nll(), terms.logOdds(),
                terms.logSigmoidOdds(), terms.logits(), forward.loadBalancing().getFloat());
    }

    /**
     * The objective from the log-probability of each target token (row-major): each row's completion is its last
     * completionLengths[row] targets (all of them where the prompt is not labelled), summed or averaged per answer;
     * the NLL is the mean of -log p over the chosen rows' completion tokens, or every target of theirs for ORPO.
     */
    static Terms fromLogProbs(OrpoLoss.Method method, PreferenceBatch batch, NDArray targetLogProbs,
            CausalLmLoss.TokenStatistics statistics, NDManager manager) {
        int[] perRow = PreferenceBatch.targetsPerRow(batch.rows());
        int rows = perRow.length;
        int pairs = batch.pairs();
        int targets = Arrays.stream(perRow).sum();
        float[] membership = new float[rows * targets];
        float[] nllMask = new float[targets];
        float[] counts = new float[rows];
        double[] logitSums = new double[2];
        int[] logitTokens = new int[2];
        int nllTokens = 0;
        int column = 0;
        for (int row = 0; row < rows; row++) {
            int completion = Math.min(batch.completionLengths()[row], perRow[row]);
            counts[row] = completion;
            int side = row < pairs ? 0 : 1;
            for (int k = 0; k < perRow[row]; k++, column++) {
                boolean inCompletion = k >= perRow[row] - completion;
                if (inCompletion) {
                    membership[row * targets + column] = 1;
                    if (statistics != null) {
                        logitSums[side] += statistics.meanLogits()[column];
                        logitTokens[side]++;
                    }
                }
                if (side == 0 && (inCompletion || method.nllReadsPrompt())) {
                    nllMask[column] = 1;
                    nllTokens++;
                }
            }
        }
        NDArray column1 = targetLogProbs.reshape(targets, 1);
        NDArray sums = manager.create(membership, new Shape(rows, targets)).matMul(column1).reshape(-1);
        // TRL's get_batch_logps(average_log_prob=True): the sum over the answer's tokens divided by their count
        NDArray logProbs = method.averagesLogProbs() ? sums.div(manager.create(counts)) : sums;
        NDArray chosen = logProbs.get("0:" + pairs);
        NDArray rejected = logProbs.get(pairs + ":");
        boolean readsNll = method.nllWeight() != 0;
        // TRL's nn.CrossEntropyLoss(): the mean of -log p over the tokens, pooled across the chosen rows
        NDArray nll = readsNll ? Scalars.dividedBy(targetLogProbs.mul(manager.create(nllMask)).sum().neg(),
                Math.max(1, nllTokens)) : manager.zeros(new Shape(1));
        OrpoLoss.Objective objective = OrpoLoss.objective(method, chosen, rejected, nll);
        double[] logits = statistics == null ? null : new double[] {logitTokens[0] == 0 ? 0
                : logitSums[0] / logitTokens[0], logitTokens[1] == 0 ? 0 : logitSums[1] / logitTokens[1]};
        return new Terms(objective.value().reshape(new Shape()), chosen.toFloatArray(), rejected.toFloatArray(),
                readsNll ? nll.getFloat() : 0, objective.logOdds() == null ? null : objective.logOdds().toFloatArray(),
                objective.logSigmoidOdds() == null ? null : objective.logSigmoidOdds().toFloatArray(), logits, 0);
    }

    /** What a micro-batch's forward and backward measured (its arrays are gone with its manager). */
    private record MicroBatch(double objective, Terms terms) {}

    /**
     * Forward and backward of weight x the micro-batch's objective, accumulating into the parameters' gradients; with
     * {@code checkpointing} layer by layer ({@link DecoderBackward}), the loss being its head.
     */
    private static MicroBatch backward(CausalLm model, OrpoLoss.Method method, PreferenceBatch batch,
            double auxCoefficient, double weight, boolean checkpointing, long dropoutSeed, NDManager manager) {
        MicroBatch[] head = new MicroBatch[1];
        double loadBalancing = DecoderBackward.run(model, batch.rows(), (states, headManager) -> {
            CausalLmLoss.TokenStatistics[] statistics = new CausalLmLoss.TokenStatistics[1];
            Terms terms = fromLogProbs(method, batch, CausalLmLoss.targetLogProbs(model, states, batch.rows(),
                    headManager, statistics), statistics[0], headManager);
            head[0] = new MicroBatch(terms.objective().getFloat(), terms);
            return Scalars.times(terms.objective(), weight);
        }, auxCoefficient * weight, checkpointing, dropoutSeed, manager);
        Terms terms = head[0].terms();
        boolean dense = Double.isNaN(loadBalancing);
        return new MicroBatch(head[0].objective() + (dense ? 0 : auxCoefficient * loadBalancing), new Terms(null,
                terms.chosen(), terms.rejected(), terms.nll(), terms.logOdds(), terms.logSigmoidOdds(), terms.logits(),
                dense ? 0 : loadBalancing));
    }

    /**
     * What one step measured, at the weights before its update.
     *
     * @param loss the step objective (mean of the micro-batches' objectives)
     * @param loadBalancing the router loss averaged over micro-batches, before its coefficient (0 for a dense model)
     * @param orpoMetrics TRL's metrics over the step's pairs
     */
    public record Measured(double loss, double loadBalancing, OrpoMetrics orpoMetrics, long tokens)
            implements Objective.Measured {
        @Override
        public Map<String, Object> metrics() {
            Map<String, Object> values = new LinkedHashMap<>(orpoMetrics.values());
            values.put("aux_loss", loadBalancing);
            return values;
        }

        @Override
        public String figures() {
            Map<String, Double> values = orpoMetrics.values();
            return String.format(Locale.ROOT, "  acc %.2f  margin %.3f", values.get("rewards/accuracies"),
                    values.get("rewards/margins"));
        }
    }

    /** Per micro-batch, backward of its objective x loss scale / micro-batches, into the parameters' gradients. */
    public static Measured gradients(OrpoLoss.Method method, List<PreferenceBatch> batches, StepContext context) {
        OrpoMetrics metrics = new OrpoMetrics(method.beta());
        double weight = context.scaler().scale() / batches.size();
        double loss = 0;
        double loadBalancing = 0;
        long tokens = 0;
        for (int j = 0; j < batches.size(); j++) {
            PreferenceBatch batch = batches.get(j);
            MicroBatch measured = backward(context.model(), method, batch, context.auxCoefficient(), weight,
                    context.gradientCheckpointing(), context.dropoutSeed() + j, context.manager());
            Terms terms = measured.terms();
            loss += measured.objective() / batches.size();
            loadBalancing += terms.loadBalancing() / batches.size();
            metrics.add(terms.chosen(), terms.rejected(), terms.nll(), terms.logOdds(), terms.logSigmoidOdds(),
                    terms.logits(), measured.objective());
            tokens += batch.realTokens();
        }
        return new Measured(loss, loadBalancing, metrics, tokens);
    }
}
