package io.mixtune.model.mistral;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.SparseFormat;
import ai.djl.nn.core.Embedding;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.generate.KvCache;
import io.mixtune.model.nn.Casts;
import io.mixtune.model.nn.DenseLinear;
import io.mixtune.model.nn.Linear;
import io.mixtune.model.nn.RmsNorm;
import io.mixtune.model.nn.RotaryEmbedding;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.function.IntConsumer;
import java.util.function.UnaryOperator;

/**
 * A Mistral or Mixtral decoder with its language-model head: embed, the decoder layers, a final norm, logits.
 * Owns the NDManager its weights live in.
 *
 * <p>The embeddings, the norms and so the residual stream are float32 whatever the compute dtype; the compute dtype
 * is that of the attention and MLP blocks' matmuls ({@link DecoderLayer}) and of an untied lm_head.
 */
public final class CausalLm implements AutoCloseable {
    private final ModelConfig config;
    private final DataType computeType;
    private final NDManager weights;
    private final NDArray embedTokens;
    private final List<DecoderLayer> layers;
    private final RmsNorm norm;
    private Linear lmHead;
    private final RotaryEmbedding rotary;

    /**
     * @param computeType the blocks' matmul dtype, FLOAT32 or FLOAT16
     * @param embedTokens [vocab, hidden], float32 (also the lm_head when the embeddings are tied)
     */
    public CausalLm(ModelConfig config, DataType computeType, NDManager weights, NDArray embedTokens,
            List<DecoderLayer> layers, RmsNorm norm, Linear lmHead) {
        if (layers.size() != config.numHiddenLayers()) {
            throw new IllegalArgumentException("config has " + config.numHiddenLayers() + " layers, got " + layers.size());
        }
        this.config = config;
        this.computeType = computeType;
        this.weights = weights;
        this.embedTokens = embedTokens;
        this.layers = List.copyOf(layers);
        this.norm = norm;
        this.lmHead = config.tieWordEmbeddings() ? new DenseLinear(embedTokens) : lmHead;
        this.rotary = new RotaryEmbedding(config.headDim(), config.ropeTheta());
    }

    public ModelConfig config() {
        return config;
    }

    public NDManager manager() {
        return weights;
    }

    /** The dtype of the attention and MLP matmuls, of the attention mask and of the rotary angles. */
    public DataType computeType() {
        return computeType;
    }

    /** Final hidden states [B, T, hidden] and, for a Mixtral, each layer's router logits [B*T, experts]. */
    public record Hidden(NDArray states, List<NDArray> routerLogits) {}

    /**
     * @param inputIds [B, T] int64
     * @param positionIds [B, T] int64: rotary positions (they restart per packed sample)
     * @param mask additive attention mask from {@link AttentionMask}
     * @param cache the KV cache during generation, else null
     */
    public Hidden hiddenStates(NDArray inputIds, NDArray positionIds, NDArray mask, KvCache cache) {
        return hiddenStates(inputIds, positionIds, mask, cache, layer -> {});
    }

    /**
     * As {@link #hiddenStates(NDArray, NDArray, NDArray, KvCache)}, calling {@code beforeLayer} with each layer's index
     * before it runs: training seeds LoRA dropout per layer there, so a layer recomputed for gradient checkpointing
     * draws the masks it drew the first time.
     */
    public Hidden hiddenStates(NDArray inputIds, NDArray positionIds, NDArray mask, KvCache cache,
            IntConsumer beforeLayer) {
        return hiddenStates(inputIds, positionIds, mask, cache, UnaryOperator.identity(), beforeLayer);
    }

    /** The same, passing the embeddings through {@code afterEmbed} first (training's NEFTune noise). */
    public Hidden hiddenStates(NDArray inputIds, NDArray positionIds, NDArray mask, KvCache cache,
            UnaryOperator<NDArray> afterEmbed, IntConsumer beforeLayer) {
        NDArray h = afterEmbed.apply(embed(inputIds));
        RotaryEmbedding.Angles angles = anglesAt(positionIds);
        List<NDArray> routerLogits = new ArrayList<>();
        for (int i = 0; i < layers.size(); i++) {
            beforeLayer.accept(i);
            DecoderLayer.Output out = layers.get(i).forward(h, angles, mask, cache == null ? null : cache.layer(i));
            h = out.hidden();
            if (out.routerLogits() != null) {
                routerLogits.add(out.routerLogits());
            }
        }
        return new Hidden(finalNorm(h), routerLogits);
    }

    // The decoder one piece at a time, for callers that run the layers themselves (gradient checkpointing).

    /** Token embeddings [B, T, hidden] of ids [B, T], float32: the residual stream's start. */
    public NDArray embed(NDArray inputIds) {
        return Embedding.embedding(inputIds, embedTokens, SparseFormat.DENSE).singletonOrThrow();
    }

    /** The rotary angles in the compute dtype: the residual's float32 would silently run attention in float32. */
    public RotaryEmbedding.Angles anglesAt(NDArray positionIds) {
        return rotary.anglesAt(positionIds, computeType);
    }

    public int layerCount() {
        return layers.size();
    }

    /** Decoder layer {@code index} on the residual h [B, T, hidden], without a KV cache. */
    public DecoderLayer.Output layer(int index, NDArray h, RotaryEmbedding.Angles angles, NDArray mask) {
        return layers.get(index).forward(h, angles, mask, null);
    }

    /** The norm after the last layer, whose output (float32) the lm_head reads. */
    public NDArray finalNorm(NDArray h) {
        return norm.forward(h);
    }

    /**
     * Logits [..., vocab] of final hidden states: callers pass only the positions they need logits for. The states go
     * to the head in its dtype: the compute dtype, or float32 for a head tied to the (float32) embeddings.
     */
    public NDArray logits(NDArray hiddenStates) {
        return lmHead.forward(Casts.to(hiddenStates, headType()));
    }

    private DataType headType() {
        return config.tieWordEmbeddings() ? embedTokens.getDataType() : computeType;
    }

    /**
     * The lm_head's weight [vocab, hidden] when the head is a plain dense layer, which nothing trains (no adapter
     * replaced it): a loss may then compute the head's input gradient itself. Empty for a quantized or adapted head.
     */
    public Optional<NDArray> denseHeadWeight() {
        return lmHead instanceof DenseLinear dense ? Optional.of(dense.weight()) : Optional.empty();
    }

    /** Whole rows at once: logits [B, T, vocab] with the mask built from padding (may be null) and the window. */
    public NDArray forward(NDArray inputIds, NDArray positionIds, NDArray paddingMask) {
        long[] shape = inputIds.getShape().getShape();
        NDArray mask = AttentionMask.forRows(inputIds.getManager(), shape[0], shape[1], paddingMask, null,
                config.slidingWindow(), computeType());
        return logits(hiddenStates(inputIds, positionIds, mask, null).states());
    }

    /**
     * Visits every linear layer under its Hugging Face module name and puts the returned layer in its place: how
     * quantized layers and LoRA adapters are attached. The lm_head is visited as {@code lm_head} unless tied.
     */
    public void replaceLinears(Linear.Replacer replacer) {
        for (int i = 0; i < layers.size(); i++) {
            layers.get(i).replaceLinears("model.layers." + i, replacer);
        }
        if (!config.tieWordEmbeddings()) {
            lmHead = replacer.replace("lm_head", lmHead);
        }
    }

    @Override
    public void close() {
        weights.close();
    }
}
