package io.mixtune.trainer.run;

import ai.djl.engine.Engine;
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
import io.mixtune.model.nn.Casts;
import io.mixtune.model.nn.Scalars;
import java.util.List;
import java.util.Optional;
import java.util.OptionalLong;
import java.util.function.UnaryOperator;

/**
 * The SFT objective of one micro-batch: summed next-token cross-entropy over the target tokens and, for a Mixtral,
 * the router load-balancing loss. The lm_head runs only on the positions that predict a target: on chat data most
 * positions are prompt, and the vocabulary projection is the largest matmul of a small model.
 */
public final class CausalLmLoss {
    /** Float32 logits computed at once, at most: 16 MB, 128 positions of a 32000-word vocabulary. */
    static final long LOGITS_CHUNK_BYTES = 16L << 20;

    private CausalLmLoss() {}

    /**
     * @param crossEntropySum sum over target tokens of -log p(target), float32 scalar
     * @param loadBalancing transformers' load_balancing_loss_func over the real tokens (before the coefficient), or
     *     null for a dense model
     * @param correctPredictions target tokens that are the argmax of their logits (TRL's mean_token_accuracy counts)
     * @param entropySum the targets' entropies summed, in nats: the entropy of each target position's distribution
     *     over the vocabulary, -sum p log p (TRL's SFTTrainer logs entropySum / targets as entropy)
     */
    public record Terms(NDArray crossEntropySum, NDArray loadBalancing, int targets, long correctPredictions,
            double entropySum) {}

    /** A micro-batch as model inputs: ids, rotary positions, the additive mask and which tokens are real. */
    public record Inputs(NDArray inputIds, NDArray positionIds, NDArray mask, NDArray realTokens) {}

    public static Inputs inputs(CausalLm model, TrainingBatch batch, NDManager manager) {
        NDArray sampleIds = batch.sampleIds() == null ? null : manager.create(batch.sampleIds());
        NDArray paddingMask = batch.paddingMask() == null ? null : manager.create(batch.paddingMask());
        NDArray mask = AttentionMask.forRows(manager, batch.rows(), batch.length(), paddingMask, sampleIds,
                model.config().slidingWindow(), model.computeType());
        return new Inputs(manager.create(batch.inputIds()), manager.create(batch.positionIds()), mask,
                realTokenMask(batch, manager));
    }

    /** The terms with autograd recording whatever the caller's collector records. */
    public static Terms of(CausalLm model, TrainingBatch batch, NDManager manager) {
        return of(model, batch, manager, OptionalLong.empty());
    }

    /** @param dropoutSeed seeds LoRA dropout per layer (see {@link #seedDropout}); empty leaves torch's generator alone */
    private static Terms of(CausalLm model, TrainingBatch batch, NDManager manager, OptionalLong dropoutSeed) {
        Forward forward = forward(model, batch, manager, dropoutSeed);
        TokenStatistics[] statistics = new TokenStatistics[1];
        NDArray sum = crossEntropySum(model, forward.states(), batch, manager,
                logitsChunkRows(model.config()), statistics);
        return new Terms(sum, forward.loadBalancing(), batch.targetCount(), statistics[0].argmaxHitCount(),
                statistics[0].entropySum());
    }

    /**
     * @param logProbs log p(target) of every target token, float32 [targets], in the batch's row-major order (row by
     *     row, left to right); when the batch has no target, one 0 tied to the graph, so that backward still runs
     * @param loadBalancing as in {@link Terms}
     */
    public record TargetLogProbs(NDArray logProbs, NDArray loadBalancing, int targets) {}

    /**
     * What TRL's trainers log of the logits at each target token besides its log-probability, without gradients:
     * each array [targets] in the row-major order of {@link TargetLogProbs}.
     *
     * @param meanLogits the mean of the token's logits over the vocabulary (DPO's logits/chosen, logits/rejected)
     * @param entropies the entropy of the token's distribution, in nats (entropy)
     * @param argmaxHits whether the target is the argmax of its logits (mean_token_accuracy)
     * @param logSquaredProbSums log sum_v p_v^2 of the token's distribution (DPO's WPO weights), empty unless asked
     */
    public record TokenStatistics(float[] meanLogits, float[] entropies, boolean[] argmaxHits,
            float[] logSquaredProbSums) {
        public TokenStatistics(float[] meanLogits, float[] entropies, boolean[] argmaxHits) {
            this(meanLogits, entropies, argmaxHits, new float[0]);
        }

        /** How many targets are the argmax of their logits. */
        long argmaxHitCount() {
            long count = 0;
            for (boolean hit : argmaxHits) {
                count += hit ? 1 : 0;
            }
            return count;
        }

        /** The entropies summed. */
        double entropySum() {
            double sum = 0;
            for (float entropy : entropies) {
                sum += entropy;
            }
            return sum;
        }
    }

    /** What {@link #chunkedLogProbs} measures of the logits besides log p(target), without gradients. */
    private enum Measure {
        NOTHING,
        /** what SFT logs: {@link TokenStatistics#argmaxHits} and entropies (meanLogits is left empty) */
        ARGMAX_HITS_AND_ENTROPIES,
        /** what DPO logs: all of {@link TokenStatistics} but logSquaredProbSums */
        ALL,
        /** all of {@link TokenStatistics} (DPO with WPO weights) */
        ALL_AND_SQUARED_PROBS
    }

    /** log p(target) per chunk, [rows, 1] each, and what the pass measured (null when it measured nothing). */
    private record Chunks(NDList logProbs, TokenStatistics statistics) {}

    /**
     * The log-probability of each target token (DPO sums them per sequence), and the load-balancing loss, with autograd
     * recording whatever the caller's collector records.
     *
     * @param dropoutSeed as in {@link #backward}; empty leaves torch's generator alone
     */
    public static TargetLogProbs targetLogProbs(CausalLm model, TrainingBatch batch, NDManager manager,
            OptionalLong dropoutSeed) {
        return targetLogProbs(model, batch, manager, dropoutSeed, null);
    }

    /** The same, and when {@code statistics} is not null, [0] receives the targets' {@link TokenStatistics}. */
    public static TargetLogProbs targetLogProbs(CausalLm model, TrainingBatch batch, NDManager manager,
            OptionalLong dropoutSeed, TokenStatistics[] statistics) {
        Forward forward = forward(model, batch, manager, dropoutSeed);
        return new TargetLogProbs(targetLogProbs(model, forward.states(), batch, manager, statistics),
                forward.loadBalancing(), batch.targetCount());
    }

    /** The final (normed) hidden states [B, T, hidden] and, for a Mixtral, the load-balancing loss (else null). */
    public record Forward(NDArray states, NDArray loadBalancing) {}

    /**
     * The decoder's forward over a batch, without the lm_head (a reward model's score head reads the states instead).
     *
     * @param dropoutSeed as in {@link #backward}; empty leaves torch's generator alone
     */
    public static Forward forward(CausalLm model, TrainingBatch batch, NDManager manager,
            OptionalLong dropoutSeed) {
        return forward(model, batch, manager, dropoutSeed, EmbeddingNoise.OFF);
    }

    /** The same with {@code noise} on the embeddings, drawn from the dropout seed (which it then needs). */
    static Forward forward(CausalLm model, TrainingBatch batch, NDManager manager, OptionalLong dropoutSeed,
            EmbeddingNoise noise) {
        Inputs in = inputs(model, batch, manager);
        UnaryOperator<NDArray> afterEmbed = noise.isOff() ? UnaryOperator.identity()
                : embeddings -> noise.apply(embeddings, batch, dropoutSeed.orElseThrow());
        CausalLm.Hidden hidden = model.hiddenStates(in.inputIds(), in.positionIds(), in.mask(), null, afterEmbed,
                layer -> dropoutSeed.ifPresent(seed -> seedDropout(seed, layer)));
        NDArray loadBalancing = null;
        ModelConfig config = model.config();
        if (config.isMixtureOfExperts() && !hidden.routerLogits().isEmpty()) {
            NDArray load = expertLoad(hidden.routerLogits(), config.numExpertsPerTok(), in.realTokens());
            loadBalancing = loadBalancingPart(NDArrays.concat(new NDList(hidden.routerLogits()), 0), load,
                    in.realTokens() == null ? null : in.realTokens().tile(hidden.routerLogits().size()),
                    routedTokens(batch, hidden.routerLogits().size()));
        }
        return new Forward(hidden.states(), loadBalancing);
    }

    /** Target positions whose logits the cross-entropy computes at once (the memory plan counts them too). */
    public static int logitsChunkRows(ModelConfig config) {
        return (int) Math.max(1, LOGITS_CHUNK_BYTES / (4L * config.vocabSize()));
    }

    /**
     * Sum of -log p(target) over the batch's targets, from the final (normed) hidden states [B, T, hidden].
     *
     * @param chunkRows target positions whose logits are computed at once
     * @param statistics when not null, [0] receives the targets' argmax hits and entropies (not their mean logits)
     */
    static NDArray crossEntropySum(CausalLm model, NDArray states, TrainingBatch batch, NDManager manager,
            int chunkRows, TokenStatistics[] statistics) {
        if (batch.targetCount() == 0) {
            if (statistics != null) {
                statistics[0] = new TokenStatistics(new float[0], new float[0], new boolean[0]);
            }
            return Casts.to(Scalars.times(states.sum(), 0), DataType.FLOAT32);
        }
        Chunks chunks = chunkedLogProbs(model, states, batch, manager, chunkRows,
                statistics == null ? Measure.NOTHING : Measure.ARGMAX_HITS_AND_ENTROPIES);
        if (statistics != null) {
            statistics[0] = chunks.statistics();
        }
        return negatedSum(chunks.logProbs());
    }

    /** -(sum of the chunks' log-probabilities), each chunk summed first. */
    private static NDArray negatedSum(NDList chunkLogProbs) {
        NDList chunkSums = new NDList();
        for (NDArray chunk : chunkLogProbs) {
            chunkSums.add(chunk.sum());
        }
        NDArray sum = chunkSums.size() == 1 ? chunkSums.get(0) : NDArrays.stack(chunkSums).sum();
        return sum.neg();
    }

    /**
     * log p(target) of each target token [targets] (see {@link TargetLogProbs}), from the final hidden states, and
     * when {@code statistics} is not null, [0] receives the targets' {@link TokenStatistics}.
     */
    public static NDArray targetLogProbs(CausalLm model, NDArray states, TrainingBatch batch, NDManager manager,
            TokenStatistics[] statistics) {
        return targetLogProbs(model, states, batch, manager, statistics, false);
    }

    /** The same, the statistics with logSquaredProbSums where {@code squaredProbs}. */
    public static NDArray targetLogProbs(CausalLm model, NDArray states, TrainingBatch batch, NDManager manager,
            TokenStatistics[] statistics, boolean squaredProbs) {
        return targetLogProbs(model, states, batch, manager, statistics, squaredProbs, 1);
    }

    /**
     * The same from the logits divided by {@code temperature} (GRPO's log-probs of sampled completions, as TRL's
     * _get_per_token_logps_and_entropies divides them), the statistics of those logits; 1 is the plain path bit for bit.
     */
    public static NDArray targetLogProbs(CausalLm model, NDArray states, TrainingBatch batch, NDManager manager,
            TokenStatistics[] statistics, boolean squaredProbs, double temperature) {
        if (batch.targetCount() == 0) {
            if (statistics != null) {
                statistics[0] = new TokenStatistics(new float[0], new float[0], new boolean[0]);
            }
            return Casts.to(Scalars.times(states.sum(), 0), DataType.FLOAT32).reshape(1);
        }
        Chunks measured = chunkedLogProbs(model, predictingStates(states, batch, manager),
                manager.create(targetIds(batch)).reshape(-1, 1), logitsChunkRows(model.config()),
                statistics == null ? Measure.NOTHING : squaredProbs ? Measure.ALL_AND_SQUARED_PROBS : Measure.ALL,
                temperature);
        if (statistics != null) {
            statistics[0] = measured.statistics();
        }
        NDList chunks = measured.logProbs();
        return (chunks.size() == 1 ? chunks.get(0) : NDArrays.concat(chunks, 0)).reshape(-1);
    }

    /**
     * log p(target) of the batch's targets in row-major order, [rows, 1] per chunk of at most chunkRows targets.
     */
    private static Chunks chunkedLogProbs(CausalLm model, NDArray states, TrainingBatch batch, NDManager manager,
            int chunkRows, Measure measure) {
        return chunkedLogProbs(model, predictingStates(states, batch, manager),
                manager.create(targetIds(batch)).reshape(-1, 1), chunkRows, measure, 1);
    }

    /**
     * @param predictingStates [targets, hidden] the rows that predict the targets
     * @param targetColumn [targets, 1] the targets
     */
    private static Chunks chunkedLogProbs(CausalLm model, NDArray predictingStates, NDArray targetColumn,
            int chunkRows, Measure measure, double temperature) {
        int targets = (int) targetColumn.getShape().get(0);
        // The logits a chunk of positions at a time. One [targets, vocab] float32 block is tens of MB: glibc maps
        // blocks over 32 MB afresh at every allocation, and the page faults of first touching them cost as much as
        // the arithmetic; 16 MB chunks are reused by the allocator and stay in the CPU cache from the matmul through
        // the softmax and their backward. On tiny-mixtral (425 targets, vocabulary 32000) this halves the head's time
        // (bench/README.md, "SFT: bench/sft.sh"); autograd computes the same values either way.
        NDManager manager = targetColumn.getManager();
        NDList chunks = new NDList();
        NDList meanLogits = new NDList();
        NDList entropies = new NDList();
        NDList argmaxHits = new NDList();
        NDList logSquaredProbSums = new NDList();
        for (int start = 0; start < targets; start += chunkRows) {
            NDIndex rows = new NDIndex("{}:{}", start, Math.min(targets, start + chunkRows));
            NDArray logits = Casts.to(model.logits(predictingStates.get(rows)), DataType.FLOAT32);
            if (temperature != 1) {
                logits = Scalars.dividedBy(logits, temperature);
            }
            NDArray logProbs = logits.logSoftmax(-1);
            chunks.add(logProbs.gather(targetColumn.get(rows), -1));
            if (measure == Measure.NOTHING) {
                continue;
            }
            // Detached (logged, never differentiated: TRL's .detach() and no_grad) and reduced to [rows] values in a
            // manager of their own: the [rows, vocab] temporaries (exp, product) go at once, not with the step's
            // manager after backward, which would keep up to two more [targets, vocab] blocks at the DPO peak.
            try (NDManager scratch = manager.newSubManager()) {
                NDArray detachedLogits = logits.stopGradient();
                detachedLogits.attach(scratch);
                NDArray chunkTargets = targetColumn.get(rows);
                chunkTargets.attach(scratch);
                NDArray detachedLogProbs = logProbs.stopGradient();
                detachedLogProbs.attach(scratch);
                NDList kept = new NDList(argmaxHits(detachedLogits, detachedLogits.gather(chunkTargets, -1)),
                        entropies(detachedLogProbs));
                argmaxHits.add(kept.get(0));
                entropies.add(kept.get(1));
                if (measure == Measure.ALL || measure == Measure.ALL_AND_SQUARED_PROBS) {
                    kept.add(detachedLogits.mean(new int[] {-1}));
                    meanLogits.add(kept.get(2));
                }
                if (measure == Measure.ALL_AND_SQUARED_PROBS) {
                    // log sum p^2 = logsumexp(2 log p), shifted by its row max as logsumexp is
                    NDArray doubled = detachedLogProbs.mul(2);
                    NDArray max = doubled.max(new int[] {-1}, true);
                    kept.add(doubled.sub(max).exp().sum(new int[] {-1}).log().add(max.reshape(-1)));
                    logSquaredProbSums.add(kept.get(3));
                }
                kept.attach(manager);
            }
        }
        if (measure == Measure.NOTHING) {
            return new Chunks(chunks, null);
        }
        return new Chunks(chunks, new TokenStatistics(
                meanLogits.isEmpty() ? new float[0] : NDArrays.concat(meanLogits, 0).toFloatArray(),
                NDArrays.concat(entropies, 0).toFloatArray(), NDArrays.concat(argmaxHits, 0).toBooleanArray(),
                logSquaredProbSums.isEmpty() ? new float[0] : NDArrays.concat(logSquaredProbSums, 0).toFloatArray()));
    }

    /**
     * TRL's entropy_from_logits, -(exp(log_softmax) x log_softmax) summed over the vocabulary, [rows]; the product in
     * place, one [rows, vocab] block fewer to allocate and fill.
     *
     * @param logProbs [rows, vocab] log-softmax, detached
     */
    private static NDArray entropies(NDArray logProbs) {
        NDArray product = logProbs.exp();
        product.muli(logProbs);
        return product.sum(new int[] {-1}).neg();
    }

    /**
     * Whether each target is the argmax of its row of logits, [rows] boolean: no logit beats it. argmax breaks an
     * exact tie by index (TRL's argmax == label counts only the first); this counts a tied target too, and is a max
     * over the row instead of an argmax: 2.8 ms instead of 7.7 on a [128, 32000] chunk (libtorch 2.7, one thread),
     * which pays for most of the entropy's exp and product there.
     *
     * @param targetLogits [rows, 1] each row's logit of its target
     */
    private static NDArray argmaxHits(NDArray logits, NDArray targetLogits) {
        return targetLogits.gte(logits.max(new int[] {-1}, true)).reshape(-1);
    }

    /** The rows of the flattened [B*T, hidden] states that predict a target, in row-major order. */
    public static NDArray predictingStates(NDArray states, TrainingBatch batch, NDManager manager) {
        long t = batch.length();
        long[] predicting = new long[batch.targetCount()];
        int n = 0;
        for (int r = 0; r < batch.rows(); r++) {
            long[] labels = batch.labels()[r];
            for (int i = 1; i < t; i++) {
                if (labels[i] != TokenizedSample.IGNORE) {
                    predicting[n++] = r * t + i - 1;
                }
            }
        }
        return states.reshape(batch.rows() * t, -1).get(new NDIndex("{}", manager.create(predicting)));
    }

    /** The batch's target tokens in row-major order, the order of {@link #predictingStates}. */
    private static long[] targetIds(TrainingBatch batch) {
        long[] targetIds = new long[batch.targetCount()];
        int n = 0;
        for (long[] labels : batch.labels()) {
            for (int i = 1; i < labels.length; i++) {
                if (labels[i] != TokenizedSample.IGNORE) {
                    targetIds[n++] = labels[i];
                }
            }
        }
        return targetIds;
    }

    /**
     * crossEntropySum / divisor as an objective for backward whose value is not the loss: its gradient at the final
     * hidden states is the cross-entropy's, computed here without autograd. Autograd's way keeps every chunk's
     * [positions, vocab] log-softmax for backward, fills a zero gradient of that size, scatters into it and runs the
     * log-softmax backward over it; here each chunk's softmax is formed once, its gradient softmax - one-hot goes through
     * the head's weight at once, and only [positions, hidden] is kept. On a Mixtral of hidden size 256 that is a sixth
     * of the step (bench/README.md, "Model sizes"). The softmax (one exp per logit) replaces log-softmax followed by
     * exp (two): log p(target) is read as log(softmax[target]), autograd's log-softmax value within rounding (a
     * relative 1e-7), and where a target's probability is below the smallest normal float, where that log loses its
     * digits, the loss is taken again by log-softmax. The gradient is autograd's within rounding too (the exp and the
     * softmax are other kernels, the 1 / divisor factor comes after the matmul):
     * CausalLmLossTest#theHeadsGradientWithoutAutogradIsAutogradsOne.
     *
     * @return empty when the head is not a frozen dense layer (quantized, or with an adapter): autograd then
     */
    static Optional<HeadGradient> headGradient(CausalLm model, NDArray states, TrainingBatch batch, double divisor,
            NDManager manager) {
        Optional<NDArray> headWeight = model.denseHeadWeight().filter(weight -> !weight.hasGradient());
        if (headWeight.isEmpty() || batch.targetCount() == 0) {
            return Optional.empty();
        }
        NDArray weight = headWeight.get();
        int targets = batch.targetCount();
        int chunkRows = logitsChunkRows(model.config());
        NDArray predictingStates = predictingStates(states, batch, manager);
        NDArray detached = predictingStates.stopGradient();
        NDArray targetColumn = manager.create(targetIds(batch)).reshape(-1, 1);
        // What autograd sends back to log p(target) through sum, neg and the division: -(1 / divisor), in float32.
        float upstream = 1.0f / (float) divisor;
        NDList chunkSums = new NDList();
        NDList smallestTargetProbabilities = new NDList();
        NDList stateGradients = new NDList();
        NDList hits = new NDList();
        NDList entropySums = new NDList();
        for (int start = 0; start < targets; start += chunkRows) {
            int end = Math.min(targets, start + chunkRows);
            NDIndex rows = new NDIndex("{}:{}", start, end);
            try (NDManager chunk = manager.newSubManager()) {
                NDArray chunkStates = detached.get(rows);
                chunkStates.attach(chunk);
                NDArray chunkTargets = targetColumn.get(rows);
                chunkTargets.attach(chunk);
                NDArray logits = model.logits(chunkStates);
                NDArray float32Logits = Casts.to(logits, DataType.FLOAT32);
                NDArray probabilities = float32Logits.softmax(-1);
                NDArray targetProbabilities = probabilities.gather(chunkTargets, -1);
                NDArray targetLogProbabilities = targetProbabilities.log();
                NDArray targetSum = targetLogProbabilities.sum();
                NDArray smallest = targetProbabilities.min();
                NDArray targetLogits = float32Logits.gather(chunkTargets, -1);
                NDArray hit = argmaxHits(float32Logits, targetLogits).sum();
                // log_softmax's backward with -u at the target is u x (softmax - one-hot); the factor u is applied
                // to the [positions, hidden] product rather than the [positions, vocab] one, a pass over the logits
                // fewer.
                NDArray rowIndex = chunk.arange(0, end - start, 1, DataType.INT64);
                probabilities.set(new NDIndex("{}, {}", rowIndex, chunkTargets.reshape(-1)),
                        targetProbabilities.sub(1f).reshape(-1));
                // The head's input gradient, the linear layer's backward, in the compute dtype as autograd has it.
                NDArray softmaxMinusOneHotTimesWeight = Casts.to(probabilities, logits.getDataType()).matMul(weight);
                NDArray stateGradient = Scalars.times(softmaxMinusOneHotTimesWeight, upstream);
                // The entropy -sum p log p without another pass over the vocabulary: log p = logit - logsumexp and
                // logsumexp = target logit - log p(target), so a row's entropy is target logit - log p(target) -
                // sum p x logit; with logit = state . weight row, sum p x logit - target logit = state . ((p -
                // one-hot) weight), the product just taken. A row's entropy is -log p(target) - state . that row:
                // [positions, hidden] work instead of an exp and a product over [positions, vocab] (which cost a
                // quarter of the head's time on a 32000-word vocabulary). TRL's exp(log_softmax) x log_softmax within
                // rounding (CausalLmLossTest, SftGoldenTest); in float16 within float16's.
                NDArray entropySum = targetSum.add(Casts.to(chunkStates, DataType.FLOAT32)
                        .mul(Casts.to(softmaxMinusOneHotTimesWeight, DataType.FLOAT32)).sum()).neg();
                for (NDArray kept : List.of(targetSum, smallest, hit, entropySum, stateGradient)) {
                    kept.attach(manager);
                }
                chunkSums.add(targetSum);
                smallestTargetProbabilities.add(smallest);
                hits.add(hit);
                entropySums.add(entropySum);
                stateGradients.add(stateGradient);
            }
        }
        float smallest = (smallestTargetProbabilities.size() == 1 ? smallestTargetProbabilities.get(0)
                : NDArrays.stack(smallestTargetProbabilities).min()).getFloat();
        double crossEntropySum;
        long correct;
        double entropySum;
        if (smallest >= Float.MIN_NORMAL) {
            crossEntropySum = negatedSum(chunkSums).getFloat();
            correct = (hits.size() == 1 ? hits.get(0) : NDArrays.stack(hits).sum()).getLong();
            entropySum = (entropySums.size() == 1 ? entropySums.get(0) : NDArrays.stack(entropySums).sum()).getFloat();
        } else { // log p(target) is also what the entropy above rests on
            try (NDManager exact = manager.newSubManager()) {
                NDArray exactStates = detached.stopGradient(); // a handle of its own on the same values
                exactStates.attach(exact);
                Chunks chunks = chunkedLogProbs(model, exactStates, targetColumn, chunkRows,
                        Measure.ARGMAX_HITS_AND_ENTROPIES, 1);
                crossEntropySum = negatedSum(chunks.logProbs()).getFloat();
                correct = chunks.statistics().argmaxHitCount();
                entropySum = chunks.statistics().entropySum();
            }
        }
        NDArray gradient = stateGradients.size() == 1 ? stateGradients.get(0) : NDArrays.concat(stateGradients, 0);
        // In the states' dtype (float32), as autograd's backward through the cast to the head's dtype would send it.
        NDArray objective = predictingStates.mul(Casts.to(gradient, predictingStates.getDataType())).sum();
        return Optional.of(new HeadGradient(objective, crossEntropySum, correct, entropySum));
    }

    /**
     * @param objective a scalar whose gradient at the final hidden states is that of crossEntropySum / divisor (its
     *     value is not the loss)
     * @param crossEntropySum the loss, summed over the targets
     * @param correctPredictions as in {@link Terms}
     * @param entropySum as in {@link Terms}
     */
    record HeadGradient(NDArray objective, double crossEntropySum, long correctPredictions, double entropySum) {}

    /** What one micro-batch's forward and backward measured; correctPredictions and entropySum as in {@link Terms}. */
    public record Values(double crossEntropySum, double loadBalancing, int targets, long correctPredictions,
            double entropySum) {}

    /**
     * Forward and backward of crossEntropySum / crossEntropyDivisor + auxWeight x loadBalancing, accumulating into the
     * parameters' gradients; with {@code checkpointing} layer by layer ({@link DecoderBackward}).
     *
     * @param dropoutSeed LoRA dropout masks are drawn from it, per layer, the same way on both paths
     * @return the terms' values; loadBalancing is NaN for a dense model
     */
    public static Values backward(CausalLm model, TrainingBatch batch, double crossEntropyDivisor, double auxWeight,
            boolean checkpointing, long dropoutSeed, NDManager manager) {
        return backward(model, batch, crossEntropyDivisor, auxWeight, checkpointing, dropoutSeed, EmbeddingNoise.OFF,
                manager);
    }

    /** The same with {@code noise} (NEFTune) on the embeddings, drawn from dropoutSeed. */
    public static Values backward(CausalLm model, TrainingBatch batch, double crossEntropyDivisor, double auxWeight,
            boolean checkpointing, long dropoutSeed, EmbeddingNoise noise, NDManager manager) {
        HeadGradient[] measured = new HeadGradient[1];
        double loadBalancing = DecoderBackward.run(model, batch, (states, headManager) -> {
            Optional<HeadGradient> head = headGradient(model, states, batch, crossEntropyDivisor, headManager);
            if (head.isPresent()) {
                measured[0] = head.get();
                return head.get().objective();
            }
            TokenStatistics[] statistics = new TokenStatistics[1];
            NDArray sum = crossEntropySum(model, states, batch, headManager, logitsChunkRows(model.config()),
                    statistics);
            NDArray objective = Scalars.dividedBy(sum, crossEntropyDivisor);
            measured[0] = new HeadGradient(objective, sum.getFloat(), statistics[0].argmaxHitCount(),
                    statistics[0].entropySum());
            return objective;
        }, auxWeight, checkpointing, dropoutSeed, noise, manager);
        return new Values(measured[0].crossEntropySum(), loadBalancing, batch.targetCount(),
                measured[0].correctPredictions(), measured[0].entropySum());
    }

    /** LoRA dropout of layer {@code layer} draws from torch's generator seeded here, in a forward and its recompute. */
    static void seedDropout(long dropoutSeed, int layer) {
        Engine.getInstance().setRandomSeed((int) (dropoutSeed * 1_009L + layer));
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

    /** The token count the load-balancing means divide by: real tokens times layers. */
    static long routedTokens(TrainingBatch batch, int layers) {
        return (long) batch.realTokens() * layers;
    }

    /*
     * Switch Transformers' auxiliary loss (Fedus et al. 2021, eq. 4) as transformers' load_balancing_loss_func computes
     * it for Mixtral: over all layers' tokens, the fraction of top-k assignments each expert receives (f_e) times its
     * mean router probability (P_e), summed over experts and multiplied by the number of experts. f carries no
     * gradient (it counts a top-k choice), so the loss is linear in each layer's probabilities: the sum over layers of
     * E x sum_e f_e x (that layer's summed probabilities of e) / tokens. Gradient checkpointing uses that to add each
     * layer's part when it recomputes the layer; without it the part is taken over all layers at once.
     */

    /**
     * f_e [E]: the fraction of the tokens' top-k assignments that go to each expert, summed over the k choices.
     *
     * @param routerLogits per layer [tokens, experts]
     * @param realTokens [tokens] 1 for tokens that count, or null for all
     */
    static NDArray expertLoad(List<NDArray> routerLogits, int topK, NDArray realTokens) {
        NDArray logits = Casts.to(NDArrays.concat(new NDList(routerLogits), 0), DataType.FLOAT32);
        int experts = (int) logits.getShape().get(1);
        NDArray chosen = logits.softmax(-1).topK(topK, -1, true, true).get(1);
        NDArray assignments = chosen.oneHot(experts).toType(DataType.FLOAT32, false).sum(new int[] {1}); // [L*T, E]
        if (realTokens == null) {
            return assignments.mean(new int[] {0});
        }
        NDArray weights = realTokens.tile(routerLogits.size()); // layers are concatenated token-major per layer
        // Divided by the count as a device array, not a float read back: no synchronisation, the same float32 division.
        return assignments.mul(weights.reshape(-1, 1)).sum(new int[] {0}).div(weights.sum());
    }

    /**
     * E x sum_e load_e x (summed probability of e over these router logits' counted tokens) / routedTokens.
     *
     * @param logits [tokens, experts] of one layer or of all layers concatenated
     * @param tokenWeights [tokens] 1 for tokens that count, or null for all
     */
    static NDArray loadBalancingPart(NDArray logits, NDArray load, NDArray tokenWeights, long routedTokens) {
        NDArray probabilities = Casts.to(logits, DataType.FLOAT32).softmax(-1);
        NDArray mass = (tokenWeights == null ? probabilities : probabilities.mul(tokenWeights.reshape(-1, 1)))
                .sum(new int[] {0});
        long experts = logits.getShape().get(1);
        return Scalars.times(Scalars.dividedBy(mass.mul(load).sum(), routedTokens), experts);
    }
}
