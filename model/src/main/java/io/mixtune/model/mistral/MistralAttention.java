package io.mixtune.model.mistral;

import ai.djl.ndarray.NDArray;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.generate.KvCache;
import io.mixtune.model.nn.Casts;
import io.mixtune.model.nn.Linear;
import io.mixtune.model.nn.RotaryEmbedding;
import io.mixtune.model.nn.Scalars;

/**
 * Grouped-query self-attention with rotary positions. DJL has no fused scaled-dot-product attention, so this is the
 * eager form: softmax(q k^T / sqrt(d) + mask) v, with the softmax in float32.
 */
public final class MistralAttention {
    private final int heads;
    private final int keyValueHeads;
    private final int headDim;
    private Linear qProj;
    private Linear kProj;
    private Linear vProj;
    private Linear oProj;

    public MistralAttention(ModelConfig config, Linear qProj, Linear kProj, Linear vProj, Linear oProj) {
        this.heads = config.numAttentionHeads();
        this.keyValueHeads = config.numKeyValueHeads();
        this.headDim = config.headDim();
        this.qProj = qProj;
        this.kProj = kProj;
        this.vProj = vProj;
        this.oProj = oProj;
    }

    /**
     * @param x [B, T, hidden]
     * @param mask additive [B or 1, 1, T, K] where K is T, or the cache's keys plus T when {@code cache} is given
     * @param cache this layer's KV cache during generation, else null
     */
    public NDArray forward(NDArray x, RotaryEmbedding.Angles angles, NDArray mask, KvCache.Layer cache) {
        long batch = x.getShape().get(0);
        long length = x.getShape().get(1);
        NDArray q = splitHeads(qProj.forward(x), heads, batch, length);
        NDArray k = splitHeads(kProj.forward(x), keyValueHeads, batch, length);
        NDArray v = splitHeads(vProj.forward(x), keyValueHeads, batch, length);
        q = RotaryEmbedding.rotate(q, angles);
        k = RotaryEmbedding.rotate(k, angles);
        if (cache != null) {
            KvCache.Entries entries = cache.append(k, v);
            k = entries.keys();
            v = entries.values();
        }
        long keys = k.getShape().get(2);
        int group = heads / keyValueHeads;
        // Grouped-query attention without copying keys: the `group` query heads that share a key/value head are laid
        // side by side along the time axis, so one batched matmul per key/value head serves them all.
        NDArray groupedQ = q.reshape(batch, keyValueHeads, group * length, headDim);
        NDArray scores = Scalars.times(groupedQ.matMul(k.transpose(0, 1, 3, 2)).reshape(batch, heads, length, keys),
                1.0 / Math.sqrt(headDim)).add(mask);
        NDArray probabilities = Casts.softmaxInFloat32(scores, -1);
        NDArray context = probabilities.reshape(batch, keyValueHeads, group * length, keys).matMul(v)
                .reshape(batch, heads, length, headDim)
                .transpose(0, 2, 1, 3)
                .reshape(batch, length, (long) heads * headDim);
        return oProj.forward(context);
    }

    private NDArray splitHeads(NDArray projected, int headCount, long batch, long length) {
        return projected.reshape(batch, length, headCount, headDim).transpose(0, 2, 1, 3);
    }

    void replaceLinears(String prefix, Linear.Replacer replacer) {
        qProj = replacer.replace(prefix + ".q_proj", qProj);
        kProj = replacer.replace(prefix + ".k_proj", kProj);
        vProj = replacer.replace(prefix + ".v_proj", vProj);
        oProj = replacer.replace(prefix + ".o_proj", oProj);
    }
}
