package io.mixtune.trainer.reward;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.MicroBatchMeans;
import io.mixtune.trainer.run.Objective;
import io.mixtune.trainer.run.ShuffledEpochs;
import io.mixtune.trainer.run.StepContext;
import io.mixtune.trainer.run.TrainingModel;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Reward modelling as an objective: the pairs in a seeded shuffle per epoch, the Bradley-Terry loss of the score
 * head's rewards ({@link RewardStep}), TRL's metrics, on validation under eval_ names.
 */
final class RewardObjective implements Objective<RewardBatch, RewardStep.Measured> {
    private final Recipe recipe;
    private final TrainingModel model;
    private final NDArray head;
    private final List<PreferenceSample> pairs;
    private final List<RewardBatch> validationBatches;
    private final long padId;
    private final ShuffledEpochs stream;

    RewardObjective(Recipe recipe, TrainingModel model, NDArray head, List<PreferenceSample> pairs,
            List<PreferenceSample> validation) {
        this.recipe = recipe;
        this.model = model;
        this.head = head;
        this.pairs = pairs;
        this.padId = model.model().config().eosTokenId();
        this.stream = new ShuffledEpochs(pairs.size(), recipe.train().microBatchSize(),
                recipe.train().shuffleSeed() * 1_000_003L + 7_919L);
        this.validationBatches = inOrder(validation, recipe.train().microBatchSize(), padId,
                recipe.reward().margin());
    }

    @Override
    public long microBatchesPerEpoch() {
        return stream.microBatchesPerEpoch();
    }

    @Override
    public RewardBatch microBatch(long index) {
        return batchOf(pairs, stream.microBatch(index), padId, recipe.reward().margin());
    }

    @Override
    public RewardStep.Measured backward(List<RewardBatch> microBatches, StepContext context) {
        return RewardStep.gradients(recipe.reward(), head, microBatches, context);
    }

    @Override
    public boolean hasValidation() {
        return !validationBatches.isEmpty();
    }

    /** eval_loss (the mean over pairs) and TRL's metrics with eval_ names, the adapters as the caller set them. */
    @Override
    public Map<String, Number> evaluate() {
        RewardMetrics totals = new RewardMetrics();
        for (RewardBatch batch : validationBatches) {
            try (NDManager evalManager = model.manager().newSubManager()) {
                RewardStep.Terms terms = RewardStep.of(model.model(), head, recipe.reward(), batch, 0, evalManager);
                totals.add(terms.rewards(), terms.loss().getFloat());
            }
        }
        return MicroBatchMeans.evaluation(totals.meanLoss(), totals.values());
    }

    @Override
    public String describeEvaluation(Map<String, Number> metrics) {
        return String.format(Locale.ROOT, "eval_loss %.4f  eval_accuracy %.3f  eval_margin %.4f",
                metrics.get("eval_loss").doubleValue(), metrics.get("eval_accuracy").doubleValue(),
                metrics.get("eval_margin").doubleValue());
    }

    /** Micro-batches of the pairs in their order (evaluation, scoring). */
    static List<RewardBatch> inOrder(List<PreferenceSample> pairs, int size, long padId, boolean withMargins) {
        List<RewardBatch> batches = new ArrayList<>();
        for (int from = 0; from < pairs.size(); from += size) {
            int first = from;
            int[] indices = new int[Math.min(size, pairs.size() - from)];
            Arrays.setAll(indices, i -> first + i);
            batches.add(batchOf(pairs, indices, padId, withMargins));
        }
        return batches;
    }

    private static RewardBatch batchOf(List<PreferenceSample> pairs, int[] indices, long padId, boolean withMargins) {
        List<PreferenceSample> samples = new ArrayList<>();
        for (int index : indices) {
            samples.add(pairs.get(index));
        }
        return RewardBatch.of(samples, indices, padId, withMargins);
    }
}
