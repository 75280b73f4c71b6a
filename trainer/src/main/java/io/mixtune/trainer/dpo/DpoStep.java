package io.mixtune.trainer.dpo;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.training.GradientCollector;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Scalars;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.GradientClipping;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.sft.CausalLmLoss;
import java.util.Arrays;
import java.util.List;

/**
 * One DPO optimizer step: per micro-batch the policy's sequence log-probs of chosen and rejected in one forward pass,
 * the DPO loss against the reference's, backward; then clipping and AdamW. As TRL (HF's Trainer without
 * num_items_in_batch), a micro-batch's objective is the mean over its pairs, plus sft_weight x the mean NLL of its
 * chosen completion tokens, plus the router coefficient x its load-balancing loss, and the step takes the mean of
 * the micro-batches' objectives.
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
     */
    public record Terms(NDArray objective, float[] policy, float[] perPairLoss, double nll, double loadBalancing) {}

    /**
     * The micro-batch's objective with the policy as it is (adapters and training flag as the caller left them).
     *
     * @param reference the reference's sequence log-probs of the same rows (zeros when reference-free)
     */
    public static Terms of(CausalLm model, Recipe.Dpo dpo, PreferenceBatch batch, float[] reference,
            double auxCoefficient, NDManager manager) {
        CausalLmLoss.TargetLogProbs target = CausalLmLoss.targetLogProbs(model, batch.rows(), manager, Long.MIN_VALUE);
        NDArray sequences = sequenceSums(target.logProbs(), batch, manager);
        int pairs = batch.pairs();
        NDArray policyChosen = sequences.get(new NDIndex("0:{}", pairs));
        NDArray policyRejected = sequences.get(new NDIndex("{}:", pairs));
        NDArray lengthArray = manager.create(lengths(batch));
        NDArray referenceArray = manager.create(reference);
        NDArray perPair = DpoLoss.perPair(dpo, policyChosen, policyRejected,
                referenceArray.get(new NDIndex("0:{}", pairs)), referenceArray.get(new NDIndex("{}:", pairs)),
                lengthArray.get(new NDIndex("0:{}", pairs)), lengthArray.get(new NDIndex("{}:", pairs)));
        NDArray objective = perPair.mean();
        int chosenTargets = 0;
        int[] perRow = batch.targetsPerRow();
        for (int i = 0; i < pairs; i++) {
            chosenTargets += perRow[i];
        }
        NDArray nll = Scalars.dividedBy(policyChosen.sum().neg(), Math.max(1, chosenTargets));
        if (dpo.sftWeight() > 0) {
            objective = objective.add(Scalars.times(nll, dpo.sftWeight()));
        }
        double loadBalancing = 0;
        if (target.loadBalancing() != null) {
            loadBalancing = target.loadBalancing().getFloat();
            if (auxCoefficient > 0) {
                objective = objective.add(Scalars.times(target.loadBalancing(), auxCoefficient));
            }
        }
        return new Terms(objective, sequences.toFloatArray(), perPair.toFloatArray(), nll.getFloat(), loadBalancing);
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
        try (NDManager passManager = manager.newSubManager()) {
            CausalLmLoss.TargetLogProbs target = CausalLmLoss.targetLogProbs(model, batch.rows(), passManager, Long.MIN_VALUE);
            return sequenceSums(target.logProbs(), batch, passManager).toFloatArray();
        }
    }

    /** Per-row sums of the row-major target log-probs: a [rows, targets] 0/1 membership matrix times the vector. */
    private static NDArray sequenceSums(NDArray targetLogProbs, PreferenceBatch batch, NDManager manager) {
        int[] perRow = batch.targetsPerRow();
        int targets = Arrays.stream(perRow).sum();
        float[] membership = new float[perRow.length * targets];
        int column = 0;
        for (int row = 0; row < perRow.length; row++) {
            for (int k = 0; k < perRow[row]; k++) {
                membership[row * targets + column++] = 1;
            }
        }
        return manager.create(membership, new ai.djl.ndarray.types.Shape(perRow.length, targets))
                .matMul(targetLogProbs.reshape(targets, 1)).reshape(-1);
    }

    /**
     * What one optimizer step measured, at the weights before its update.
     *
     * @param loss the step objective (mean of the micro-batches' objectives)
     * @param gradNorm the global gradient norm before clipping
     */
    public record StepResult(double loss, double gradNorm, DpoMetrics metrics, long tokens) {
        public boolean isFinite() {
            return Double.isFinite(loss) && Double.isFinite(gradNorm);
        }
    }

    /** Gives the reference log-probs of a micro-batch's rows (precomputed, or a reference pass now). */
    public interface Reference {
        float[] of(PreferenceBatch batch);
    }

    /**
     * Zero the gradients, backward through each micro-batch's objective / micro-batches, clip, AdamW at lr. When the
     * loss or the norm is not finite nothing is updated, for the caller to stop.
     *
     * @param dropoutSeed micro-batch j seeds torch's generator (LoRA dropout) with dropoutSeed + j
     */
    public static StepResult optimizerStep(CausalLm model, List<NDArray> parameters, Recipe.Dpo dpo,
            List<PreferenceBatch> batches, Reference reference, double auxCoefficient, double maxGradNorm,
            AdamW optimizer, double lr, NDManager manager, long dropoutSeed) {
        GradientClipping.zero(parameters);
        DpoMetrics metrics = new DpoMetrics(dpo.beta());
        double loss = 0;
        long tokens = 0;
        for (int j = 0; j < batches.size(); j++) {
            PreferenceBatch batch = batches.get(j);
            float[] referenceLogProbs = reference.of(batch);
            Engine.getInstance().setRandomSeed((int) (dropoutSeed + j));
            try (NDManager stepManager = manager.newSubManager();
                    GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                Terms terms = of(model, dpo, batch, referenceLogProbs, auxCoefficient, stepManager);
                loss += terms.objective().getFloat() / batches.size();
                metrics.add(terms, referenceLogProbs);
                collector.backward(Scalars.dividedBy(terms.objective(), batches.size()));
            }
            tokens += batch.realTokens();
        }
        double gradNorm = GradientClipping.clip(parameters, maxGradNorm);
        StepResult result = new StepResult(loss, gradNorm, metrics, tokens);
        if (result.isFinite()) {
            optimizer.step(lr);
        }
        return result;
    }
}
