package io.mixtune.trainer.sft;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.AttentionMask;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Scalars;
import java.util.List;

/**
 * The SFT objective of one micro-batch: summed next-token cross-entropy over the target tokens and, for a Mixtral,
 * the router load-balancing loss. The lm_head runs only on the positions that predict a target: on chat data most
 * positions are prompt, and the vocabulary projection is the largest matmul of a small model.
 */
public final class CausalLmLoss {
    private CausalLmLoss() {}

    /**
     * @param crossEntropySum sum over target tokens of -log p(target), float32 scalar
     * @param loadBalancing transformers' load_balancing_loss_func over the real tokens (before the coefficient), or
     *     null for a dense model
     */
    public record Terms(NDArray crossEntropySum, NDArray loadBalancing, int targets) {}

    public static Terms of(CausalLm model, TrainingBatch batch, NDManager manager) {
        TargetLogProbs target = targetLogProbs(model, batch, manager);
        return new Terms(target.logProbs().sum().neg(), target.loadBalancing(), target.targets());
    }

    /**
     * @param logProbs log p(target) of every target token, float32 [targets], in the batch's row-major order (row by
     *     row, left to right); when the batch has no target, one 0 tied to the graph, so that backward still runs
     * @param loadBalancing as in {@link Terms}
     */
    public record TargetLogProbs(NDArray logProbs, NDArray loadBalancing, int targets) {}

    /** The log-probability of each target token (DPO sums them per sequence), and the load-balancing loss. */
    public static TargetLogProbs targetLogProbs(CausalLm model, TrainingBatch batch, NDManager manager) {
        long b = batch.rows();
        long t = batch.length();
        NDArray inputIds = manager.create(batch.inputIds());
        NDArray positionIds = manager.create(batch.positionIds());
        NDArray sampleIds = batch.sampleIds() == null ? null : manager.create(batch.sampleIds());
        NDArray paddingMask = batch.paddingMask() == null ? null : manager.create(batch.paddingMask());
        ModelConfig config = model.config();
        NDArray mask = AttentionMask.forRows(manager, b, t, paddingMask, sampleIds, config.slidingWindow(),
                model.computeType());
        CausalLm.Hidden hidden = model.hiddenStates(inputIds, positionIds, mask, null);

        // Rows of the flattened [B*T, hidden] states that predict a target, and those targets.
        int targets = batch.targetCount();
        long[] predicting = new long[targets];
        long[] targetIds = new long[targets];
        int n = 0;
        for (int r = 0; r < b; r++) {
            long[] labels = batch.labels()[r];
            for (int i = 1; i < t; i++) {
                if (labels[i] != TokenizedSample.IGNORE) {
                    predicting[n] = r * t + i - 1;
                    targetIds[n++] = labels[i];
                }
            }
        }
        NDArray logProbs;
        if (targets == 0) {
            logProbs = Scalars.times(hidden.states().sum(), 0).toType(DataType.FLOAT32, false).reshape(1);
        } else {
            NDArray states = hidden.states().reshape(b * t, -1).get(new NDIndex("{}", manager.create(predicting)));
            NDArray logits = model.logits(states).toType(DataType.FLOAT32, false);
            logProbs = logits.logSoftmax(-1).gather(manager.create(targetIds).reshape(-1, 1), -1).reshape(-1);
        }
        NDArray loadBalancing = null;
        if (config.isMixtureOfExperts() && !hidden.routerLogits().isEmpty()) {
            loadBalancing = loadBalancing(hidden.routerLogits(), config.numExpertsPerTok(), realTokenMask(batch, manager));
        }
        return new TargetLogProbs(logProbs, loadBalancing, targets);
    }

    /** 1 for real tokens, 0 for padding, flattened [B*T] float32; null when every token is real. */
    private static NDArray realTokenMask(TrainingBatch batch, NDManager manager) {
        if (batch.realTokens() == batch.rows() * batch.length()) {
            return null;
        }
        float[] mask = new float[batch.rows() * batch.length()];
        for (int r = 0; r < batch.rows(); r++) {
            for (int i = 0; i < batch.length(); i++) {
                mask[r * batch.length() + i] = batch.isReal(r, i) ? 1 : 0;
            }
        }
        return manager.create(mask);
    }

    /**
     * Switch Transformers' auxiliary loss (Fedus et al. 2021, eq. 4) as transformers' load_balancing_loss_func computes
     * it for Mixtral: over all layers' tokens, the fraction of top-k assignments each expert receives times its mean
     * router probability, summed over experts and multiplied by the number of experts.
     *
     * @param routerLogits per layer [tokens, experts]
     * @param tokenMask [tokens] 1 for tokens that count, or null for all
     */
    static NDArray loadBalancing(List<NDArray> routerLogits, int topK, NDArray tokenMask) {
        NDArray logits = NDArrays.concat(new NDList(routerLogits), 0).toType(DataType.FLOAT32, false);
        long experts = logits.getShape().get(1);
        NDArray probabilities = logits.softmax(-1);
        NDArray chosen = probabilities.topK(topK, -1, true, true).get(1);
        NDArray expertMask = chosen.oneHot((int) experts).toType(DataType.FLOAT32, false); // [L*T, k, E]
        NDArray tokensPerExpert;
        NDArray probabilityPerExpert;
        if (tokenMask == null) {
            tokensPerExpert = expertMask.mean(new int[] {0});
            probabilityPerExpert = probabilities.mean(new int[] {0});
        } else {
            NDArray weights = tokenMask.tile(routerLogits.size()); // layers are concatenated token-major per layer
            float count = weights.sum().getFloat();
            tokensPerExpert = Scalars.dividedBy(expertMask.mul(weights.reshape(-1, 1, 1)).sum(new int[] {0}), count);
            probabilityPerExpert = Scalars.dividedBy(probabilities.mul(weights.reshape(-1, 1)).sum(new int[] {0}), count);
        }
        return Scalars.times(tokensPerExpert.mul(probabilityPerExpert.expandDims(0)).sum(), experts);
    }
}
