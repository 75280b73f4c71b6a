package io.mixtune.model.mistral;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import io.mixtune.model.generate.KvCache;
import io.mixtune.model.nn.Casts;
import io.mixtune.model.nn.Linear;
import io.mixtune.model.nn.RmsNorm;
import io.mixtune.model.nn.RotaryEmbedding;

/**
 * Pre-norm residual block: x + attention(norm(x)), then + mlp(norm(x)); the MLP is dense or a sparse MoE block.
 *
 * <p>The residual x keeps its own dtype (float32) while attention and the MLP run in the compute dtype: in float16
 * compute the norm's output is cast to float16 on the way in and each block's output back to float32 before it is
 * added, as a transformers model prepared by PEFT's prepare_model_for_kbit_training runs under autocast (float32
 * norms and embeddings, float16 matmuls). A residual past 65504 then stays finite. In float32 every cast is a no-op.
 */
public final class DecoderLayer {
    private final DataType computeType;
    private final RmsNorm inputLayernorm;
    private final MistralAttention selfAttention;
    private final RmsNorm postAttentionLayernorm;
    private final SwiGluMlp mlp;
    private final SparseMoeBlock sparseMoe;

    /** Exactly one of {@code mlp} (Mistral) and {@code sparseMoe} (Mixtral) is non-null. */
    public DecoderLayer(DataType computeType, RmsNorm inputLayernorm, MistralAttention selfAttention,
            RmsNorm postAttentionLayernorm, SwiGluMlp mlp, SparseMoeBlock sparseMoe) {
        if ((mlp == null) == (sparseMoe == null)) {
            throw new IllegalArgumentException("a decoder layer has either a dense MLP or a sparse MoE block");
        }
        this.computeType = computeType;
        this.inputLayernorm = inputLayernorm;
        this.selfAttention = selfAttention;
        this.postAttentionLayernorm = postAttentionLayernorm;
        this.mlp = mlp;
        this.sparseMoe = sparseMoe;
    }

    /** The layer's output and, for a Mixtral layer, its router logits (else null). */
    public record Output(NDArray hidden, NDArray routerLogits) {}

    public Output forward(NDArray x, RotaryEmbedding.Angles angles, NDArray mask, KvCache.Layer cache) {
        DataType residualType = x.getDataType();
        NDArray attended = selfAttention.forward(Casts.to(inputLayernorm.forward(x), computeType), angles, mask, cache);
        NDArray h = x.add(Casts.to(attended, residualType));
        NDArray normed = Casts.to(postAttentionLayernorm.forward(h), computeType);
        if (sparseMoe == null) {
            return new Output(h.add(Casts.to(mlp.forward(normed), residualType)), null);
        }
        SparseMoeBlock.Output moe = sparseMoe.forward(normed);
        return new Output(h.add(Casts.to(moe.hidden(), residualType)), moe.routerLogits());
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
