package io.mixtune.model.generate;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.AttentionMask;
import io.mixtune.model.mistral.CausalLm;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.Collection;
import java.util.List;
import java.util.Set;

/**
 * Autoregressive generation with a KV cache: the prompt goes through in chunks (of the window, when there is one,
 * so the rolling buffer never holds less than a query needs), then one token per step until EOS or the limit.
 *
 * <p>Several models can decode in lockstep, each with its own cache, their logits combined at every step into the
 * distribution the sampler draws from ({@link ProxyTuning}).
 */
public final class Generator {
    private final List<CausalLm> models;
    private final LogitsCombination combination;
    private final Set<Integer> eosTokenIds;

    /** How the logits of models decoding in lockstep make the next token's logits, one row per model. */
    @FunctionalInterface
    public interface LogitsCombination {
        float[] combine(float[][] rowPerModel);
    }

    /** Stops at config.json's EOS. */
    public Generator(CausalLm model) {
        this(model, List.of(model.config().eosTokenId()));
    }

    /** @param eosTokenIds the ids that end an answer ({@link GenerationConfig#eosTokenIds}) */
    public Generator(CausalLm model, Collection<Integer> eosTokenIds) {
        this(List.of(model), rows -> rows[0], eosTokenIds);
    }

    /** @param models decoded in lockstep; {@code eosTokenIds} end the answer */
    public Generator(List<CausalLm> models, LogitsCombination combination, Collection<Integer> eosTokenIds) {
        if (models.isEmpty()) {
            throw new IllegalArgumentException("generation needs at least one model");
        }
        if (eosTokenIds.isEmpty()) {
            throw new IllegalArgumentException("generation needs at least one EOS id");
        }
        this.models = List.copyOf(models);
        this.combination = combination;
        this.eosTokenIds = Set.copyOf(eosTokenIds);
    }

    /**
     * @param promptLogits when non-null, receives the prompt's logits row by row ([prompt length][vocab])
     * @return the new token ids, ending with an EOS id if the model produced one
     */
    public List<Integer> generate(long[] promptIds, int maxNewTokens, TokenSampler sampler, List<float[]> promptLogits) {
        if (promptIds.length == 0) {
            throw new IllegalArgumentException("the prompt is empty: give at least one token");
        }
        List<Integer> generated = new ArrayList<>();
        List<NDManager> sessions = new ArrayList<>();
        List<KvCache> caches = new ArrayList<>();
        try {
            for (CausalLm model : models) {
                NDManager session = model.manager().newSubManager();
                sessions.add(session);
                caches.add(newCache(model, session));
            }
            float[] last = null;
            int chunk = promptIds.length;
            for (KvCache cache : caches) {
                chunk = Math.min(chunk, cache.maxStepTokens());
            }
            for (int start = 0; start < promptIds.length; start += chunk) {
                int end = Math.min(promptIds.length, start + chunk);
                float[][] rows = step(sessions, caches, Arrays.copyOfRange(promptIds, start, end), start,
                        promptLogits != null);
                if (promptLogits != null) {
                    promptLogits.addAll(List.of(rows));
                }
                last = rows[rows.length - 1];
            }
            long position = promptIds.length;
            BitSet seen = new BitSet();
            for (long id : promptIds) {
                seen.set((int) id);
            }
            while (generated.size() < maxNewTokens) {
                int token = sampler.next(last, seen);
                generated.add(token);
                seen.set(token);
                if (eosTokenIds.contains(token) || generated.size() == maxNewTokens) {
                    break;
                }
                last = step(sessions, caches, new long[] {token}, position++, false)[0];
            }
        } finally {
            caches.forEach(KvCache::close);
            sessions.forEach(NDManager::close);
        }
        return generated;
    }

    /**
     * {@code samplers.size()} answers to one prompt decoded together as one batch (GRPO's completions of a prompt): the
     * rows share the prompt, so they share positions and need no padding, and each forward pass serves them all. Row r
     * draws from its own sampler and ends at its first EOS id or at the limit (a row that ended is still fed, its
     * tokens dropped). One model only.
     *
     * @return each row's new token ids, ending with an EOS id where the model produced one
     */
    public List<List<Integer>> generateGroup(long[] promptIds, int maxNewTokens, List<TokenSampler> samplers) {
        if (models.size() != 1) {
            throw new IllegalStateException("a group is decoded by one model");
        }
        if (promptIds.length == 0) {
            throw new IllegalArgumentException("the prompt is empty: give at least one token");
        }
        CausalLm model = models.get(0);
        int count = samplers.size();
        List<List<Integer>> generated = new ArrayList<>();
        BitSet[] seen = new BitSet[count];
        for (int r = 0; r < count; r++) {
            generated.add(new ArrayList<>());
            seen[r] = new BitSet();
            for (long id : promptIds) {
                seen[r].set((int) id);
            }
        }
        try (NDManager session = model.manager().newSubManager(); KvCache cache = newCache(model, session, count)) {
            float[][] last = null;
            int chunk = Math.min(promptIds.length, cache.maxStepTokens());
            for (int start = 0; start < promptIds.length; start += chunk) {
                long[] piece = Arrays.copyOfRange(promptIds, start, Math.min(promptIds.length, start + chunk));
                last = groupStep(model, session, cache, repeat(piece, count), start);
            }
            boolean[] ended = new boolean[count];
            long position = promptIds.length;
            for (int t = 0; t < maxNewTokens; t++) {
                long[][] next = new long[count][1];
                boolean all = true;
                for (int r = 0; r < count; r++) {
                    if (!ended[r]) {
                        int token = samplers.get(r).next(last[r], seen[r]);
                        generated.get(r).add(token);
                        seen[r].set(token);
                        ended[r] = eosTokenIds.contains(token);
                    }
                    List<Integer> row = generated.get(r);
                    next[r][0] = row.isEmpty() ? promptIds[promptIds.length - 1] : row.get(row.size() - 1);
                    all &= ended[r];
                }
                if (all || t == maxNewTokens - 1) {
                    break;
                }
                last = groupStep(model, session, cache, next, position++);
            }
        }
        return generated;
    }

    private static long[][] repeat(long[] tokens, int count) {
        long[][] rows = new long[count][];
        Arrays.fill(rows, tokens);
        return rows;
    }

    /** Runs a batch of rows at the same positions through one model; returns each row's last logits. */
    private static float[][] groupStep(CausalLm model, NDManager session, KvCache cache, long[][] tokens,
            long firstIndex) {
        try (NDManager stepManager = session.newSubManager()) {
            int n = tokens[0].length;
            long[] queryIndices = new long[n];
            long[][] positions = new long[tokens.length][n];
            for (int i = 0; i < n; i++) {
                queryIndices[i] = firstIndex + i;
            }
            Arrays.fill(positions, queryIndices);
            long[] keyIndices = cache.beginStep(firstIndex, n);
            NDArray mask = AttentionMask.forCache(stepManager, queryIndices, keyIndices,
                    model.config().slidingWindow(), model.computeType());
            NDArray hidden = model.hiddenStates(stepManager.create(tokens), stepManager.create(positions), mask, cache)
                    .states();
            cache.endStep();
            NDArray logits = model.logits(hidden.get(new NDIndex(":, -1, :"))).toType(DataType.FLOAT32, false);
            int vocab = (int) logits.getShape().get(1);
            float[] flat = logits.toFloatArray();
            float[][] rows = new float[tokens.length][];
            for (int r = 0; r < rows.length; r++) {
                rows[r] = Arrays.copyOfRange(flat, r * vocab, (r + 1) * vocab);
            }
            return rows;
        }
    }

    /** Every model's step on the same tokens, their rows combined: the logits of every new token, or the last one's. */
    private float[][] step(List<NDManager> sessions, List<KvCache> caches, long[] tokens, long firstIndex,
            boolean allRows) {
        if (models.size() == 1) {
            return step(models.get(0), sessions.get(0), caches.get(0), tokens, firstIndex, allRows);
        }
        float[][][] perModel = new float[models.size()][][];
        for (int m = 0; m < models.size(); m++) {
            perModel[m] = step(models.get(m), sessions.get(m), caches.get(m), tokens, firstIndex, allRows);
        }
        float[][] combined = new float[perModel[0].length][];
        float[][] rowPerModel = new float[models.size()][];
        for (int r = 0; r < combined.length; r++) {
            for (int m = 0; m < models.size(); m++) {
                rowPerModel[m] = perModel[m][r];
            }
            combined[r] = combination.combine(rowPerModel);
        }
        return combined;
    }

    /** Runs new tokens through one model; returns the logits of every new token, or only the last one's. */
    private static float[][] step(CausalLm model, NDManager session, KvCache cache, long[] tokens, long firstIndex,
            boolean allRows) {
        try (NDManager stepManager = session.newSubManager()) {
            long[] queryIndices = new long[tokens.length];
            for (int i = 0; i < tokens.length; i++) {
                queryIndices[i] = firstIndex + i;
            }
            long[] keyIndices = cache.beginStep(firstIndex, tokens.length);
            NDArray mask = AttentionMask.forCache(stepManager, queryIndices, keyIndices,
                    model.config().slidingWindow(), model.computeType());
            NDArray inputIds = stepManager.create(tokens).reshape(1, tokens.length);
            NDArray positionIds = stepManager.create(queryIndices).reshape(1, tokens.length);
            NDArray hidden = model.hiddenStates(inputIds, positionIds, mask, cache).states();
            cache.endStep();
            NDArray wanted = allRows ? hidden.get(new NDIndex("0")) : hidden.get(new NDIndex("0, -1:"));
            NDArray logits = model.logits(wanted).toType(DataType.FLOAT32, false);
            int vocab = (int) logits.getShape().get(1);
            float[] flat = logits.toFloatArray();
            float[][] rows = new float[flat.length / vocab][];
            for (int r = 0; r < rows.length; r++) {
                rows[r] = Arrays.copyOfRange(flat, r * vocab, (r + 1) * vocab);
            }
            return rows;
        }
    }

    private static KvCache newCache(CausalLm model, NDManager session) {
        return newCache(model, session, 1);
    }

    private static KvCache newCache(CausalLm model, NDManager session, int batch) {
        ModelConfig config = model.config();
        if (config.slidingWindow() == null) {
            return new GrowingKvCache(session, config.numHiddenLayers());
        }
        return new RollingKvCache(session, config.numHiddenLayers(), batch, config.numKeyValueHeads(),
                config.headDim(), config.slidingWindow(), model.computeType());
    }
}
