package io.mixtune.trainer.dpo;

import ai.djl.ndarray.NDManager;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.MicroBatchMeans;
import io.mixtune.trainer.run.Objective;
import io.mixtune.trainer.run.ShuffledEpochs;
import io.mixtune.trainer.run.StepContext;
import io.mixtune.trainer.run.TrainingCheckpoint;
import io.mixtune.trainer.run.TrainingModel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * One DPO stage as an objective: its pairs in a seeded shuffle per epoch (TRL samples pairs at random too), the DPO
 * loss against the stage's frozen reference ({@link DpoStep}), and TRL's metrics, on validation under eval_ names.
 */
final class DpoObjective implements Objective<PreferenceBatch, DpoStep.Measured> {
    private final Recipe recipe;
    private final Recipe.Dpo dpo;
    private final TrainingModel model;
    private final int stage;
    private final List<PreferenceSample> pairs;
    private final List<PreferenceBatch> validationBatches;
    private final StageReference reference;
    private final long padId;
    private final double auxCoefficient;
    private final ShuffledEpochs stream;

    /**
     * @param stage 0-based
     * @param validationBatches the validation pairs in micro-batches (empty without validation)
     */
    DpoObjective(Recipe recipe, TrainingModel model, int stage, List<PreferenceSample> pairs,
            List<PreferenceBatch> validationBatches, StageReference reference) {
        this.recipe = recipe;
        this.dpo = recipe.dpo();
        this.model = model;
        this.stage = stage;
        this.pairs = pairs;
        this.validationBatches = validationBatches;
        this.reference = reference;
        this.padId = model.model().config().eosTokenId();
        this.auxCoefficient = recipe.train().routerAuxCoefficient(model.model().config());
        // Each stage shuffles apart: the seed, the stage and the epoch.
        this.stream = new ShuffledEpochs(pairs.size(), recipe.train().microBatchSize(),
                recipe.train().shuffleSeed() * 1_000_003L + 1_009L * stage);
    }

    @Override
    public long microBatchesPerEpoch() {
        return stream.microBatchesPerEpoch();
    }

    @Override
    public PreferenceBatch microBatch(long index) {
        return batchOf(pairs, stream.microBatch(index), padId);
    }

    @Override
    public DpoStep.Measured backward(List<PreferenceBatch> microBatches, StepContext context) {
        return DpoStep.gradients(dpo, microBatches, batch -> reference.of(batch, reference.train), context);
    }

    @Override
    public boolean hasValidation() {
        return !validationBatches.isEmpty();
    }

    /**
     * The validation metrics under TRL's eval_ names, the policy (as the caller set it) against the reference;
     * eval_loss with the router term, as TRL's DPOTrainer._compute_loss adds router_aux_loss_coef x aux_loss in
     * evaluation too (prediction_step calls it), and that term's router loss as eval_aux_loss, the mean over the
     * micro-batches (TRL's _metrics["eval"]["aux_loss"], one value a batch, averaged when logged).
     */
    @Override
    public Map<String, Number> evaluate() {
        DpoMetrics totals = new DpoMetrics(dpo.beta());
        double loadBalancing = 0;
        for (PreferenceBatch batch : validationBatches) {
            float[] referenceLogProbs = reference.of(batch, reference.validation);
            try (NDManager evalManager = model.manager().newSubManager()) {
                DpoStep.Terms terms = DpoStep.of(model.model(), dpo, batch, referenceLogProbs, auxCoefficient,
                        evalManager);
                totals.add(terms.policy(), referenceLogProbs, terms.objective().getFloat(), terms.nll(),
                        terms.logits());
                loadBalancing += terms.loadBalancing();
            }
        }
        Map<String, Number> metrics = MicroBatchMeans.evaluation(totals.meanLoss(), totals.values());
        if (auxCoefficient > 0) { // as training logs aux_loss: only where the term is added
            metrics.put("eval_aux_loss", loadBalancing / validationBatches.size());
        }
        return metrics;
    }

    @Override
    public String describeEvaluation(Map<String, Number> metrics) {
        return DpoMetrics.describeEvaluation(metrics);
    }

    @Override
    public void saveState(Path checkpointDir) {
        reference.save(checkpointDir.resolve(TrainingCheckpoint.REFERENCE_STATE));
    }

    /** Micro-batches of the pairs in their order, for the reference pass and evaluation. */
    static List<PreferenceBatch> inOrder(List<PreferenceSample> pairs, int size, long padId) {
        List<PreferenceBatch> batches = new ArrayList<>();
        for (int[] indices : ShuffledEpochs.inOrder(pairs.size(), size)) {
            batches.add(batchOf(pairs, indices, padId));
        }
        return batches;
    }

    private static PreferenceBatch batchOf(List<PreferenceSample> pairs, int[] indices, long padId) {
        List<PreferenceSample> samples = new ArrayList<>();
        for (int index : indices) {
            samples.add(pairs.get(index));
        }
        return PreferenceBatch.of(samples, indices, padId);
    }
}
