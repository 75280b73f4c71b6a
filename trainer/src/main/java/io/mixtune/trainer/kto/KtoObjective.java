package io.mixtune.trainer.kto;

import ai.djl.ndarray.NDManager;
import io.mixtune.data.preference.LabeledSample;
import io.mixtune.trainer.dpo.PreferenceBatch;
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
import java.util.Locale;
import java.util.Map;

/**
 * KTO as an objective: its examples in file order every epoch (TRL's KTOConfig samples sequentially, since each
 * example's KL row was paired with its neighbours in a fixed-order batch), the KTO loss against the frozen reference
 * ({@link KtoStep}), and TRL's metrics, on validation under eval_ names.
 */
final class KtoObjective implements Objective<KtoBatch, KtoStep.Measured> {
    private final Recipe.Kto kto;
    private final TrainingModel model;
    private final List<KtoBatch> batches;
    private final List<KtoBatch> validationBatches;
    private final KtoReference reference;
    private final double auxCoefficient;

    KtoObjective(Recipe recipe, TrainingModel model, List<KtoBatch> batches, List<KtoBatch> validationBatches,
            KtoReference reference) {
        this.kto = recipe.kto();
        this.model = model;
        this.batches = batches;
        this.validationBatches = validationBatches;
        this.reference = reference;
        this.auxCoefficient = recipe.train().routerAuxCoefficient(model.model().config());
    }

    /**
     * A set's examples in micro-batches of {@code size}, in order, each with its KL row where the loss reads the KL
     * estimate (mismatched within blocks of {@code size}, as TRL pairs them by per_device_train_batch_size).
     */
    static List<KtoBatch> inOrder(Recipe recipe, List<LabeledSample> samples, long padId) {
        int size = recipe.train().microBatchSize();
        long[][] kl = recipe.kto().estimatesKl() ? LabeledSample.klCompletions(samples, size) : null;
        List<KtoBatch> out = new ArrayList<>();
        for (int[] indices : ShuffledEpochs.inOrder(samples.size(), size)) {
            out.add(KtoBatch.of(samples, kl, indices, recipe.data().maxSeqLen(), padId));
        }
        return out;
    }

    @Override
    public long microBatchesPerEpoch() {
        return batches.size();
    }

    @Override
    public KtoBatch microBatch(long index) {
        return batches.get((int) (index % batches.size()));
    }

    @Override
    public KtoStep.Measured backward(List<KtoBatch> microBatches, StepContext context) {
        return KtoStep.gradients(kto, microBatches, batch -> reference.of(batch, false), context);
    }

    @Override
    public boolean hasValidation() {
        return !validationBatches.isEmpty();
    }

    /** The validation metrics under TRL's eval_ names, eval_loss the mean over examples (with the router term). */
    @Override
    public Map<String, Number> evaluate() {
        KtoMetrics totals = new KtoMetrics(kto.beta());
        for (KtoBatch batch : validationBatches) {
            KtoStep.Against against = reference.of(batch, true);
            try (NDManager evalManager = model.manager().newSubManager()) {
                KtoStep.Terms terms = KtoStep.of(model.model(), kto, batch, against, auxCoefficient, evalManager);
                totals.add(batch.labels(), terms.policy(), against.reference(), against.kl(),
                        terms.objective().getFloat(), terms.statistics(), PreferenceBatch.targetsPerRow(batch.rows()));
            }
        }
        return MicroBatchMeans.evaluation(totals.meanLoss(), totals.values());
    }

    @Override
    public String describeEvaluation(Map<String, Number> metrics) {
        return String.format(Locale.ROOT, "eval_loss %.4f  eval_kl %.4f  eval_rewards/margins %s",
                metrics.get("eval_loss").doubleValue(), metrics.get("eval_kl").doubleValue(),
                metrics.containsKey("eval_rewards/margins") ? String.format(Locale.ROOT, "%.4f",
                        metrics.get("eval_rewards/margins").doubleValue()) : "-");
    }

    @Override
    public void saveState(Path checkpointDir) {
        reference.save(checkpointDir.resolve(TrainingCheckpoint.REFERENCE_STATE));
    }
}
