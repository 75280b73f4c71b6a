package io.mixtune.model.mistral;

import ai.djl.ndarray.NDArray;
import io.mixtune.model.generate.KvCache;
import io.mixtune.model.nn.Linear;
import io.mixtune.model.nn.RmsNorm;
import io.mixtune.model.nn.RotaryEmbedding;

/** Pre-norm residual block: x + attention(norm(x)), then + mlp(norm(x)); the MLP is dense or a sparse MoE block. */
public final class DecoderLayer {
    private final RmsNorm inputLayernorm;
    private final MistralAttention selfAttention;
    private final RmsNorm postAttentionLayernorm;
    private final SwiGluMlp mlp;
    private final SparseMoeBlock sparseMoe;

    /** Exactly one of {@code mlp} (Mistral) and {@code sparseMoe} (Mixtral) is non-null. */
    public DecoderLayer(RmsNorm inputLayernorm, MistralAttention selfAttention, RmsNorm postAttentionLayernorm,
            SwiGluMlp mlp, SparseMoeBlock sparseMoe) {
        if ((mlp == null) == (sparseMoe == null)) {
            throw new IllegalArgumentException("a decoder layer has either a dense MLP or a sparse MoE block");
        }
        this.inputLayernorm = inputLayernorm;
        this.selfAttention = selfAttention;
        this.postAttentionLayernorm = postAttentionLayernorm;
        this.mlp = mlp;
        this.sparseMoe = sparseMoe;
    }

    /** The layer's output and, for a Mixtral layer, its router logits (else null). */
    public record Output(NDArray hidden, NDArray routerLogits) {}

    public Output forward(NDArray x, RotaryEmbedding.Angles angles, NDArray mask, KvCache.Layer cache) {
        NDArray h = x.add(selfAttention.forward(inputLayernorm.forward(x), angles, mask, cache));
        NDArray normed = postAttentionLayernorm.forward(h);
        if (sparseMoe == null) {
            return new Output(h.add(mlp.forward(normed)), null);
        }
        SparseMoeBlock.Output moe = sparseMoe.forward(normed);
        return new Output(h.add(moe.hidden()), moe.routerLogits());
    }

    void replaceLinears(String prefix, Linear.Replacer replacer) {
        selfAttention.replaceLinears(prefix + ".self_attn", replacer);
        if (sparseMoe == null) {
            mlp.replaceLinears(prefix + ".mlp", replacer);
        } else {
            sparseMoe.replaceLinears(prefix + ".block_sparse_moe", replacer);
        }
    }
}
