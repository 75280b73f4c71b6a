package io.mixtune.trainer.orpo;

import ai.djl.ndarray.NDManager;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.trainer.dpo.DpoMetrics;
import io.mixtune.trainer.dpo.PreferenceBatch;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.MicroBatchMeans;
import io.mixtune.trainer.run.Objective;
import io.mixtune.trainer.run.ShuffledEpochs;
import io.mixtune.trainer.run.StepContext;
import io.mixtune.trainer.run.TrainingModel;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * ORPO or CPO as an objective: the pairs in a seeded shuffle per epoch (TRL samples them at random too; the order DPO's
 * single stage draws), the loss of {@link OrpoStep}, and TRL's metrics, on validation under eval_ names. Nothing but
 * the loop's state goes into a checkpoint: there is no reference.
 */
final class OrpoObjective implements Objective<PreferenceBatch, OrpoStep.Measured> {
    private final OrpoLoss.Method method;
    private final TrainingModel model;
    private final List<PreferenceSample> pairs;
    private final List<PreferenceBatch> validationBatches;
    private final long padId;
    private final double auxCoefficient;
    private final ShuffledEpochs stream;

    OrpoObjective(Recipe recipe, TrainingModel model, List<PreferenceSample> pairs,
            List<PreferenceSample> validation) {
        this.method = OrpoLoss.Method.of(recipe);
        this.model = model;
        this.pairs = pairs;
        this.padId = model.model().config().eosTokenId();
        this.auxCoefficient = recipe.train().routerAuxCoefficient(model.model().config());
        this.validationBatches = inOrder(method, validation, recipe.train().microBatchSize(), padId);
        // DpoObjective's seed of its first stage: the same pairs are drawn in the same order
        this.stream = new ShuffledEpochs(pairs.size(), recipe.train().microBatchSize(),
                recipe.train().shuffleSeed() * 1_000_003L);
    }

    /** Micro-batches of the pairs in their order (validation). */
    static List<PreferenceBatch> inOrder(OrpoLoss.Method method, List<PreferenceSample> pairs, int size, long padId) {
        List<PreferenceBatch> batches = new ArrayList<>();
        for (int[] indices : ShuffledEpochs.inOrder(pairs.size(), size)) {
            batches.add(OrpoStep.batchOf(method, pairs, indices, padId));
        }
        return batches;
    }

    @Override
    public long microBatchesPerEpoch() {
        return stream.microBatchesPerEpoch();
    }

    @Override
    public PreferenceBatch microBatch(long index) {
        return OrpoStep.batchOf(method, pairs, stream.microBatch(index), padId);
    }

    @Override
    public OrpoStep.Measured backward(List<PreferenceBatch> microBatches, StepContext context) {
        return OrpoStep.gradients(method, microBatches, context);
    }

    @Override
    public boolean hasValidation() {
        return !validationBatches.isEmpty();
    }

    /**
     * The validation metrics under TRL's eval_ names, eval_loss the mean over pairs of the loss with the router term
     * (TRL's get_batch_loss_metrics adds aux_loss_coef x aux_loss in evaluation too).
     */
    @Override
    public Map<String, Number> evaluate() {
        OrpoMetrics totals = new OrpoMetrics(method.beta());
        for (PreferenceBatch batch : validationBatches) {
            try (NDManager evalManager = model.manager().newSubManager()) {
                OrpoStep.Terms terms = OrpoStep.of(model.model(), method, batch, auxCoefficient, evalManager);
                totals.add(terms.chosen(), terms.rejected(), terms.nll(), terms.logOdds(), terms.logSigmoidOdds(),
                        terms.logits(), terms.objective().getFloat());
            }
        }
        return MicroBatchMeans.evaluation(totals.meanLoss(), totals.values());
    }

    @Override
    public String describeEvaluation(Map<String, Number> metrics) {
        return DpoMetrics.describeEvaluation(metrics);
    }
}
