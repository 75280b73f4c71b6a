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
import java.util.List;

/**
 * Autoregressive generation with a KV cache: the prompt goes through in chunks (of the window, when there is one,
 * so the rolling buffer never holds less than a query needs), then one token per step until EOS or the limit.
 */
public final class Generator {
    private final CausalLm model;

    public Generator(CausalLm model) {
        this.model = model;
    }

    /**
     * @param promptLogits when non-null, receives the prompt's logits row by row ([prompt length][vocab])
     * @return the new token ids, ending with EOS if the model produced it
     */
    public List<Integer> generate(long[] promptIds, int maxNewTokens, TokenSampler sampler, List<float[]> promptLogits) {
        if (promptIds.length == 0) {
            throw new IllegalArgumentException("the prompt is empty: give at least one token");
        }
        ModelConfig config = model.config();
        List<Integer> generated = new ArrayList<>();
        try (NDManager session = model.manager().newSubManager(); KvCache cache = newCache(session)) {
            float[] last = null;
            int chunk = Math.min(cache.maxStepTokens(), promptIds.length);
            for (int start = 0; start < promptIds.length; start += chunk) {
                int end = Math.min(promptIds.length, start + chunk);
                float[][] rows = step(session, cache, Arrays.copyOfRange(promptIds, start, end), start,
                        promptLogits != null);
                if (promptLogits != null) {
                    promptLogits.addAll(List.of(rows));
                }
                last = rows[rows.length - 1];
            }
            long position = promptIds.length;
            while (generated.size() < maxNewTokens) {
                int token = sampler.next(last);
                generated.add(token);
                if (token == config.eosTokenId() || generated.size() == maxNewTokens) {
                    break;
                }
                last = step(session, cache, new long[] {token}, position++, false)[0];
            }
        }
        return generated;
    }

    /** Runs new tokens through the model; returns the logits of every new token, or only the last one's. */
    private float[][] step(NDManager session, KvCache cache, long[] tokens, long firstIndex, boolean allRows) {
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

    private KvCache newCache(NDManager session) {
        ModelConfig config = model.config();
        if (config.slidingWindow() == null) {
            return new GrowingKvCache(session, config.numHiddenLayers());
        }
        return new RollingKvCache(session, config.numHiddenLayers(), 1, config.numKeyValueHeads(), config.headDim(),
                config.slidingWindow(), model.computeType());
    }
}
