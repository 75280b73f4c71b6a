package io.mixtune.trainer.dpo;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.Shape;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Scalars;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.DecoderBackward;
import io.mixtune.trainer.run.Objective;
import io.mixtune.trainer.run.OptimizerStep;
import io.mixtune.trainer.run.StepContext;
import io.mixtune.trainer.run.TrainingBatch;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalLong;

/**
 * One DPO optimizer step: per micro-batch the policy's sequence log-probs of chosen and rejected in one forward pass,
 * the DPO loss against the reference's, backward; the loop then updates as for every method ({@link OptimizerStep}). As
 * TRL (HF's Trainer without num_items_in_batch), a micro-batch's objective is the mean over its pairs of the weighted
 * DPO losses ({@link DpoLoss#objective}), plus sft_weight x the mean NLL of its chosen completion tokens, plus the
 * router coefficient x its load-balancing loss, and the step takes the mean of the micro-batches' objectives.
 */
public final class DpoStep {
    private DpoStep() {}

    /**
     * What one micro-batch computed, at the weights before the update.
     *
     * @param objective the scalar to differentiate (float32, in the micro-batch's manager)
     * @param policy the policy's sequence log-probs, chosen rows then rejected rows
     * @param perPairLoss the DPO loss of each pair
     * @param nll mean negative log-likelihood of the chosen completion tokens (reported whether or not it trains)
     * @param loadBalancing the router loss before its coefficient, 0 for a dense model
     * @param logits TRL's metrics of the policy's logits at the completion tokens
     */
    public record Terms(NDArray objective, float[] policy, float[] perPairLoss, double nll, double loadBalancing,
            DpoMetrics.LogitMeans logits) {}

    /**
     * The micro-batch's objective with the policy as it is (adapters and training flag as the caller left them).
     *
     * @param reference the reference's sequence log-probs of the same rows (zeros when reference-free)
     */
    public static Terms of(CausalLm model, Recipe.Dpo dpo, PreferenceBatch batch, float[] reference,
            double auxCoefficient, NDManager manager) {
        CausalLmLoss.TokenStatistics[] statistics = new CausalLmLoss.TokenStatistics[1];
        CausalLmLoss.Forward forward = CausalLmLoss.forward(model, batch.rows(), manager, OptionalLong.empty());
        CausalLmLoss.TargetLogProbs target = new CausalLmLoss.TargetLogProbs(CausalLmLoss.targetLogProbs(model,
                forward.states(), batch.rows(), manager, statistics, dpo.useWeighting()), forward.loadBalancing(),
                batch.rows().targetCount());
        Terms terms = fromLogProbs(dpo, batch, reference, target.logProbs(), statistics[0], manager);
        if (target.loadBalancing() == null) {
            return terms;
        }
        NDArray objective = auxCoefficient > 0
                ? terms.objective().add(Scalars.times(target.loadBalancing(), auxCoefficient)) : terms.objective();
        return new Terms(objective, terms.policy(), terms.perPairLoss(), terms.nll(),
                target.loadBalancing().getFloat(), terms.logits());
    }

    /** The DPO (+ SFT) objective of a micro-batch from the log-probability of each of its target tokens. */
    private static Terms fromLogProbs(Recipe.Dpo dpo, PreferenceBatch batch, float[] reference,
            NDArray targetLogProbs, CausalLmLoss.TokenStatistics statistics, NDManager manager) {
        NDArray sequences = sequenceSums(targetLogProbs, batch, dpo.ldAlpha(), manager);
        int pairs = batch.pairs();
        NDArray policyChosen = sequences.get(new NDIndex("0:{}", pairs));
        NDArray policyRejected = sequences.get(new NDIndex("{}:", pairs));
        NDArray lengthArray = manager.create(lengths(batch));
        NDArray referenceArray = manager.create(reference);
        int chosenTargets = 0;
        int[] perRow = batch.targetsPerRow();
        for (int i = 0; i < pairs; i++) {
            chosenTargets += perRow[i];
        }
        // The NLL (TRL's sft term) reads every chosen token once, LD-DPO or not: the chosen rows' targets come first.
        NDArray chosenTokens = dpo.ldAlpha() == null ? policyChosen
                : targetLogProbs.reshape(-1).get(new NDIndex("0:{}", chosenTargets));
        NDArray pairWeights = dpo.useWeighting()
                ? manager.create(wpoWeights(targetLogProbs.toFloatArray(), statistics, perRow, pairs)) : null;
        DpoLoss.Objective objective = DpoLoss.objective(dpo, policyChosen, policyRejected,
                referenceArray.get(new NDIndex("0:{}", pairs)), referenceArray.get(new NDIndex("{}:", pairs)),
                lengthArray.get(new NDIndex("0:{}", pairs)), lengthArray.get(new NDIndex("{}:", pairs)),
                chosenTokens, chosenTargets, pairWeights);
        return new Terms(objective.value(), sequences.toFloatArray(), objective.perPair().toFloatArray(),
                objective.nll().getFloat(), 0, DpoMetrics.LogitMeans.of(statistics, batch.targetsPerRow(), pairs));
    }

    /**
     * WPO's weight of each pair (TRL 1.13's use_weighting, WPO eq. 2), without gradient: per row w = exp(mean over its
     * targets of log p(target) - log sum_v p_v^2), the policy's per-token log-probs (every token once, whatever
     * ld_alpha), and a pair's weight w(chosen) x w(rejected).
     *
     * @param targetLogProbs log p of every target, row-major
     */
    static float[] wpoWeights(float[] targetLogProbs, CausalLmLoss.TokenStatistics statistics, int[] perRow,
            int pairs) {
        float[] rowWeights = new float[perRow.length];
        int column = 0;
        for (int row = 0; row < perRow.length; row++) {
            float aligned = 0;
            for (int k = 0; k < perRow[row]; k++, column++) {
                aligned += targetLogProbs[column] - statistics.logSquaredProbSums()[column];
            }
            rowWeights[row] = (float) Math.exp(aligned / Math.max(1, perRow[row]));
        }
        float[] weights = new float[pairs];
        for (int i = 0; i < pairs; i++) {
            weights[i] = rowWeights[i] * rowWeights[pairs + i];
        }
        return weights;
    }

    private static float[] lengths(PreferenceBatch batch) {
        float[] lengths = new float[batch.completionLengths().length];
        for (int i = 0; i < lengths.length; i++) {
            lengths[i] = batch.completionLengths()[i];
        }
        return lengths;
    }

    /** Sequence log-probs of a batch's rows without gradients (the reference pass, or evaluation). */
    public static float[] sequenceLogProbs(CausalLm model, PreferenceBatch batch, NDManager manager) {
        return sequenceLogProbs(model, batch, null, manager);
    }

    /** @param ldAlpha LD-DPO's weight of the tokens past the shorter side's length (dpo.ld_alpha), or null */
    public static float[] sequenceLogProbs(CausalLm model, PreferenceBatch batch, Double ldAlpha,
            NDManager manager) {
        try (NDManager passManager = manager.newSubManager()) {
            CausalLmLoss.TargetLogProbs target = CausalLmLoss.targetLogProbs(model, batch.rows(), passManager,
                    OptionalLong.empty());
            return sequenceSums(target.logProbs(), batch, ldAlpha, passManager).toFloatArray();
        }
    }

    /** Sequence log-probs of a batch's rows without gradients (KTO's reference and KL passes). */
    public static float[] sequenceLogProbs(CausalLm model, TrainingBatch rows, NDManager manager) {
        try (NDManager passManager = manager.newSubManager()) {
            CausalLmLoss.TargetLogProbs target = CausalLmLoss.targetLogProbs(model, rows, passManager,
                    OptionalLong.empty());
            return rowSums(target.logProbs(), PreferenceBatch.targetsPerRow(rows), passManager).toFloatArray();
        }
    }

    /** Per-row sums of row-major target log-probs, each row's {@code perRow} of them: [rows], differentiable. */
    public static NDArray rowSums(NDArray targetLogProbs, int[] perRow, NDManager manager) {
        int targets = Arrays.stream(perRow).sum();
        return membership(perRow, targets, null, true, manager).matMul(targetLogProbs.reshape(targets, 1)).reshape(-1);
    }

    /**
     * Per-row sums of the row-major target log-probs: a [rows, targets] 0/1 membership matrix times the vector. With
     * ldAlpha (LD-DPO), as TRL 1.13 splits them: the sum of a row's first s targets, s the smaller of its pair's two
     * target counts, plus ldAlpha x the sum of the rest.
     */
    private static NDArray sequenceSums(NDArray targetLogProbs, PreferenceBatch batch, Double ldAlpha,
            NDManager manager) {
        int[] perRow = batch.targetsPerRow();
        int targets = Arrays.stream(perRow).sum();
        NDArray column = targetLogProbs.reshape(targets, 1);
        if (ldAlpha == null) {
            return rowSums(targetLogProbs, perRow, manager);
        }
        int pairs = batch.pairs();
        int[] shared = new int[perRow.length];
        for (int row = 0; row < perRow.length; row++) {
            shared[row] = Math.min(perRow[row % pairs], perRow[row % pairs + pairs]);
        }
        NDArray sharedSums = membership(perRow, targets, shared, true, manager).matMul(column).reshape(-1);
        NDArray tailSums = membership(perRow, targets, shared, false, manager).matMul(column).reshape(-1);
        return sharedSums.add(Scalars.times(tailSums, ldAlpha));
    }

    /**
     * The [rows, targets] 0/1 matrix of each row's targets: all of them (shared null), or its first shared[row]
     * (within) or the rest (not within).
     */
    private static NDArray membership(int[] perRow, int targets, int[] shared, boolean within, NDManager manager) {
        float[] membership = new float[perRow.length * targets];
        int column = 0;
        for (int row = 0; row < perRow.length; row++) {
            for (int k = 0; k < perRow[row]; k++) {
                membership[row * targets + column++] = shared == null || (k < shared[row]) == within ? 1 : 0;
            }
        }
        return manager.create(membership, new Shape(perRow.length, targets));
    }

    /** What a micro-batch's forward and backward measured (its arrays are gone with its manager). */
    private record MicroBatch(double objective, float[] policy, float[] perPairLoss, double nll, double loadBalancing,
            DpoMetrics.LogitMeans logits) {
        double meanPairLoss() {
            double sum = 0;
            for (float value : perPairLoss) {
                sum += value;
            }
            return sum / perPairLoss.length;
        }
    }

    /**
     * Forward and backward of weight x the micro-batch's objective, accumulating into the parameters' gradients; with
     * {@code checkpointing} layer by layer ({@link DecoderBackward}), the DPO loss being its head.
     */
    private static MicroBatch backward(CausalLm model, Recipe.Dpo dpo, PreferenceBatch batch, float[] reference,
            double auxCoefficient, double weight, boolean checkpointing, long dropoutSeed, NDManager manager) {
        MicroBatch[] head = new MicroBatch[1];
        double loadBalancing = DecoderBackward.run(model, batch.rows(), (states, headManager) -> {
            CausalLmLoss.TokenStatistics[] statistics = new CausalLmLoss.TokenStatistics[1];
            Terms terms = fromLogProbs(dpo, batch, reference, CausalLmLoss.targetLogProbs(model, states,
                    batch.rows(), headManager, statistics, dpo.useWeighting()), statistics[0], headManager);
            head[0] = new MicroBatch(terms.objective().getFloat(), terms.policy(), terms.perPairLoss(), terms.nll(), 0,
                    terms.logits());
            return Scalars.times(terms.objective(), weight);
        }, auxCoefficient * weight, checkpointing, dropoutSeed, manager);
        MicroBatch terms = head[0];
        boolean dense = Double.isNaN(loadBalancing);
        return new MicroBatch(terms.objective() + (dense ? 0 : auxCoefficient * loadBalancing), terms.policy(),
                terms.perPairLoss(), terms.nll(), dense ? 0 : loadBalancing, terms.logits());
    }

    /**
     * What one DPO step measured, at the weights before its update.
     *
     * @param loss the step objective (mean of the micro-batches' objectives)
     * @param loadBalancing the router loss averaged over micro-batches, before its coefficient (0 for a dense model)
     * @param dpoMetrics TRL's metrics over the step's pairs
     */
    public record Measured(double loss, double loadBalancing, DpoMetrics dpoMetrics, long tokens)
            implements Objective.Measured {
        @Override
        public Map<String, Object> metrics() {
            Map<String, Object> values = new LinkedHashMap<>(dpoMetrics.values());
            values.put("aux_loss", loadBalancing);
            return values;
        }

        @Override
        public String figures() {
            return String.format(Locale.ROOT, "  acc %.2f  margin %.3f", dpoMetrics.accuracy(), dpoMetrics.margin());
        }
    }

    /** Gives the reference log-probs of a micro-batch's rows (precomputed, or a reference pass now). */
    public interface Reference {
        float[] of(PreferenceBatch batch);
    }

    /**
     * Per micro-batch, backward of its objective x loss scale / micro-batches, into the parameters' gradients.
     */
    public static Measured gradients(Recipe.Dpo dpo, List<PreferenceBatch> batches, Reference reference,
            StepContext context) {
        DpoMetrics metrics = new DpoMetrics(dpo.beta());
        double weight = context.scaler().scale() / batches.size();
        double loss = 0;
        double loadBalancing = 0;
        long tokens = 0;
        for (int j = 0; j < batches.size(); j++) {
            PreferenceBatch batch = batches.get(j);
            float[] referenceLogProbs = reference.of(batch);
            MicroBatch measured = backward(context.model(), dpo, batch, referenceLogProbs, context.auxCoefficient(),
                    weight, context.gradientCheckpointing(), context.dropoutSeed() + j, context.manager());
            loss += measured.objective() / batches.size();
            loadBalancing += measured.loadBalancing() / batches.size();
            metrics.add(measured.policy(), referenceLogProbs, measured.meanPairLoss(), measured.nll(),
                    measured.logits());
            tokens += batch.realTokens();
        }
        return new Measured(loss, loadBalancing, metrics, tokens);
    }
}
