package io.mixtune.trainer.proxy;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.model.generate.ProxyTuning;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Casts;
import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.Evaluation;
import io.mixtune.trainer.run.TrainingBatch;
import java.util.List;

/**
 * The loss of the proxy-tuned distribution on the target (assistant) tokens: at each position that predicts a target,
 * -log_softmax(large + alpha (tuned - base))[target], as {@link Evaluation} scores one model (the same batches, the
 * same chunks of target positions, the same float32 log-softmax and sums), so at alpha 0 it prints the large model's
 * eval loss exactly.
 */
public final class ProxyEvaluation {
    private ProxyEvaluation() {}

    public static Evaluation.Result of(ProxyTuning tuning, List<TrainingBatch> batches, NDManager manager) {
        List<CausalLm> models = List.of(tuning.large(), tuning.smallBase(), tuning.smallTuned());
        int chunkRows = CausalLmLoss.logitsChunkRows(tuning.large().config());
        double sum = 0;
        long targets = 0;
        for (TrainingBatch batch : batches) {
            if (batch.targetCount() == 0) {
                continue;
            }
            try (NDManager batchManager = manager.newSubManager()) {
                long[][] positions = targetPositions(batch);
                NDArray predicting = batchManager.create(positions[0]);
                NDArray targetColumn = batchManager.create(positions[1]).reshape(-1, 1);
                NDArray[] predictingStates = new NDArray[models.size()];
                for (int m = 0; m < models.size(); m++) {
                    CausalLm model = models.get(m);
                    CausalLmLoss.Inputs in = CausalLmLoss.inputs(model, batch, batchManager);
                    NDArray states = model.hiddenStates(in.inputIds(), in.positionIds(), in.mask(), null).states();
                    predictingStates[m] = states.reshape(batch.rows() * (long) batch.length(), -1)
                            .get(new NDIndex("{}", predicting));
                }
                NDList chunkSums = new NDList();
                for (int start = 0; start < positions[0].length; start += chunkRows) {
                    NDIndex rows = new NDIndex("{}:{}", start, Math.min(positions[0].length, start + chunkRows));
                    NDArray[] logits = new NDArray[models.size()];
                    for (int m = 0; m < models.size(); m++) {
                        logits[m] = Casts.to(models.get(m).logits(predictingStates[m].get(rows)), DataType.FLOAT32);
                    }
                    NDArray combined = tuning.combine(logits[0], logits[1], logits[2]);
                    chunkSums.add(combined.logSoftmax(-1).gather(targetColumn.get(rows), -1).sum());
                }
                NDArray batchSum = chunkSums.size() == 1 ? chunkSums.get(0) : NDArrays.stack(chunkSums).sum();
                sum += batchSum.neg().getFloat();
                targets += batch.targetCount();
            }
        }
        return new Evaluation.Result(sum / Math.max(1, targets), targets);
    }

    /**
     * Row-major indices into the flattened [B*T] positions that predict a target, and those targets: position i - 1
     * predicts label i, as in training's cross-entropy.
     */
    private static long[][] targetPositions(TrainingBatch batch) {
        int targets = batch.targetCount();
        long[] predicting = new long[targets];
        long[] targetIds = new long[targets];
        int n = 0;
        for (int r = 0; r < batch.rows(); r++) {
            long[] labels = batch.labels()[r];
            for (int i = 1; i < batch.length(); i++) {
                if (labels[i] != TokenizedSample.IGNORE) {
                    predicting[n] = (long) r * batch.length() + i - 1;
                    targetIds[n++] = labels[i];
                }
            }
        }
        return new long[][] {predicting, targetIds};
    }
}
