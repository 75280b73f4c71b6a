package io.mixtune.trainer.kto;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Scalars;
import io.mixtune.trainer.dpo.DpoStep;
import io.mixtune.trainer.dpo.PreferenceBatch;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.DecoderBackward;
import io.mixtune.trainer.run.Objective;
import io.mixtune.trainer.run.OptimizerStep;
import io.mixtune.trainer.run.StepContext;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalLong;

/**
 * One KTO optimizer step: per micro-batch the policy's completion log-probs in one forward pass, the KTO loss
 * ({@link KtoLoss}) against the reference's and the micro-batch's KL estimate, backward; the loop then updates as for
 * every method ({@link OptimizerStep}). As TRL (HF's Trainer without num_items_in_batch), a micro-batch's objective is
 * the mean of its examples' weighted losses plus the router coefficient x its load-balancing loss, and the step takes
 * the mean of the micro-batches' objectives.
 */
public final class KtoStep {
    private KtoStep() {}

    /**
     * What the loss reads besides the policy's log-probs, fixed before the forward pass.
     *
     * @param reference the reference's completion log-probs of the batch's rows
     * @param kl the KL estimate ({@link KtoLoss#klEstimate}), 0 without one
     */
    public record Against(float[] reference, float kl) {}

    /** Gives a micro-batch's reference log-probs and KL estimate (precomputed, and a policy pass without gradient). */
    public interface Reference {
        Against of(KtoBatch batch);
    }

    /**
     * What one micro-batch computed, at the weights before the update.
     *
     * @param objective the scalar to differentiate (float32, in the micro-batch's manager)
     * @param policy the policy's completion log-probs per row
     * @param loadBalancing the router loss before its coefficient, 0 for a dense model
     * @param statistics the policy's logits at the target tokens (TRL's entropy and logits/* metrics)
     */
    public record Terms(NDArray objective, float[] policy, double loadBalancing,
            CausalLmLoss.TokenStatistics statistics) {}

    /** The micro-batch's objective with the policy as it is (adapters and training flag as the caller left them). */
    public static Terms of(CausalLm model, Recipe.Kto kto, KtoBatch batch, Against against, double auxCoefficient,
            NDManager manager) {
        CausalLmLoss.TokenStatistics[] statistics = new CausalLmLoss.TokenStatistics[1];
        CausalLmLoss.Forward forward = CausalLmLoss.forward(model, batch.rows(), manager, OptionalLong.empty());
        NDArray targets = CausalLmLoss.targetLogProbs(model, forward.states(), batch.rows(), manager, statistics);
        Terms terms = fromLogProbs(kto, batch, against, targets, statistics[0], manager);
        if (forward.loadBalancing() == null) {
            return terms;
        }
        NDArray objective = auxCoefficient > 0
                ? terms.objective().add(Scalars.times(forward.loadBalancing(), auxCoefficient)) : terms.objective();
        return new Terms(objective, terms.policy(), forward.loadBalancing().getFloat(), terms.statistics());
    }

    private static Terms fromLogProbs(Recipe.Kto kto, KtoBatch batch, Against against, NDArray targetLogProbs,
            CausalLmLoss.TokenStatistics statistics, NDManager manager) {
        NDArray policy = DpoStep.rowSums(targetLogProbs, PreferenceBatch.targetsPerRow(batch.rows()), manager);
        KtoLoss.Objective objective = KtoLoss.objective(kto, policy, manager.create(against.reference()),
                batch.labels(), against.kl(), manager);
        return new Terms(objective.value(), policy.toFloatArray(), 0, statistics);
    }

    /** What a micro-batch's forward and backward measured (its arrays are gone with its manager). */
    private record MicroBatch(double objective, float[] policy, double loadBalancing,
            CausalLmLoss.TokenStatistics statistics) {}

    /**
     * Forward and backward of weight x the micro-batch's objective, accumulating into the parameters' gradients; with
     * {@code checkpointing} layer by layer ({@link DecoderBackward}), the KTO loss being its head.
     */
    private static MicroBatch backward(CausalLm model, Recipe.Kto kto, KtoBatch batch, Against against,
            double auxCoefficient, double weight, boolean checkpointing, long dropoutSeed, NDManager manager) {
        MicroBatch[] head = new MicroBatch[1];
        double loadBalancing = DecoderBackward.run(model, batch.rows(), (states, headManager) -> {
            CausalLmLoss.TokenStatistics[] statistics = new CausalLmLoss.TokenStatistics[1];
            Terms terms = fromLogProbs(kto, batch, against, CausalLmLoss.targetLogProbs(model, states, batch.rows(),
                    headManager, statistics), statistics[0], headManager);
            head[0] = new MicroBatch(terms.objective().getFloat(), terms.policy(), 0, terms.statistics());
            return Scalars.times(terms.objective(), weight);
        }, auxCoefficient * weight, checkpointing, dropoutSeed, manager);
        MicroBatch terms = head[0];
        boolean dense = Double.isNaN(loadBalancing);
        return new MicroBatch(terms.objective() + (dense ? 0 : auxCoefficient * loadBalancing), terms.policy(),
                dense ? 0 : loadBalancing, terms.statistics());
    }

    /**
     * What one KTO step measured, at the weights before its update.
     *
     * @param loss the step objective (mean of the micro-batches' objectives)
     * @param loadBalancing the router loss averaged over micro-batches, before its coefficient (0 for a dense model)
     * @param ktoMetrics TRL's metrics over the step's examples
     */
    public record Measured(double loss, double loadBalancing, KtoMetrics ktoMetrics, long tokens)
            implements Objective.Measured {
        @Override
        public Map<String, Object> metrics() {
            Map<String, Object> values = new LinkedHashMap<>(ktoMetrics.values());
            values.put("aux_loss", loadBalancing);
            return values;
        }

        @Override
        public String figures() {
            Double margin = ktoMetrics.values().get("rewards/margins"); // absent where a batch holds one label only
            return String.format(Locale.ROOT, "  kl %.3f  margin %s", ktoMetrics.kl(),
                    margin == null ? "-" : String.format(Locale.ROOT, "%.3f", margin));
        }
    }

    /** Per micro-batch, backward of its objective x loss scale / micro-batches, into the parameters' gradients. */
    public static Measured gradients(Recipe.Kto kto, List<KtoBatch> batches, Reference reference,
            StepContext context) {
        KtoMetrics metrics = new KtoMetrics(kto.beta());
        double weight = context.scaler().scale() / batches.size();
        double loss = 0;
        double loadBalancing = 0;
        long tokens = 0;
        for (int j = 0; j < batches.size(); j++) {
            KtoBatch batch = batches.get(j);
            Against against = reference.of(batch);
            MicroBatch measured = backward(context.model(), kto, batch, against, context.auxCoefficient(), weight,
                    context.gradientCheckpointing(), context.dropoutSeed() + j, context.manager());
            loss += measured.objective() / batches.size();
            loadBalancing += measured.loadBalancing() / batches.size();
            metrics.add(batch.labels(), measured.policy(), against.reference(), against.kl(), measured.objective(),
                    measured.statistics(), PreferenceBatch.targetsPerRow(batch.rows()));
            tokens += batch.realTokens();
        }
        return new Measured(loss, loadBalancing, metrics, tokens);
    }
}
