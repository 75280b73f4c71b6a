package io.mixtune.trainer.plan;

import io.mixtune.model.config.ModelConfig;
import io.mixtune.trainer.run.CausalLmLoss;
import java.util.List;

/**
 * Bytes of the arrays our forward pass creates, op by op in the order {@code CausalLm}, {@code DecoderLayer},
 * {@code MistralAttention}, {@code SwiGluMlp}, {@code SparseMoeBlock}, {@code LoraLinear}, {@code Nf4Linear} and
 * {@code CausalLmLoss} create them. Under DJL an array lives until its NDManager closes, not only while autograd needs
 * it as in PyTorch: a layer holds everything it created, views aside (reshape, transpose, slices, broadcasts), until
 * its manager closes, except where the code frees intermediates early as PyTorch would ({@code LoraLinear}'s update,
 * the float32 copies around the softmax). On top of that autograd keeps tensors no DJL array holds ("recorded"
 * below): each LoRA dropout's mask, A's input and A x, and the contiguous copy of v that the batched matmul makes.
 *
 * @param s bytes per element of the compute dtype (4 or 2), the attention and MLP blocks' dtype; the embeddings, the
 *     residual stream, the norms, softmax, LoRA and the loss are float32 (4)
 * @param gpu dropout keeps a 1-byte mask on a GPU (torch's fused kernel), a mask in the input's dtype on a CPU
 */
record ForwardBytes(ModelConfig config, LinearLayers linears, int s, boolean gpu, boolean dropout, long rows,
        long length) {
    private static final int F32 = 4;
    private static final int I64 = 8;

    long tokens() {
        return rows * length;
    }

    /** Ids, positions and the packing or padding ids, the additive mask, the rotary angles and the embeddings. */
    long inputs(boolean packed) {
        long n = tokens();
        long t2 = length * length;
        long bytes = 3 * n * I64; // input ids, position ids, sample ids or padding mask
        // AttentionMask.forRows: key <= query (and inside the sliding window), then per row the packed sample or the
        // padding, then not, cast, times the dtype's lowest value.
        bytes += length * I64 + t2;
        if (config.slidingWindow() != null) {
            bytes += length * I64 + 2 * t2;
        }
        // Packed: sample ids equal, and. Padded: the mask as bool, and, the real-token mask.
        bytes += packed ? 2 * rows * t2 : n + rows * t2 + n * F32;
        bytes += rows * t2 * (1 + 2L * s);
        // RotaryEmbedding.anglesAt: positions as float32, frequencies, both halves, cos, sin (and their casts).
        long d = config.headDim();
        bytes += n * F32 + n * d / 2 * F32 + 3 * n * d * F32 + (s == F32 ? 0 : 2 * n * d * s);
        return bytes + n * config.hiddenSize() * F32; // the embeddings, float32: the residual stream's start
    }

    /**
     * Every array decoder layer {@code index} creates on the micro-batch's tokens, its dequantized weights apart.
     *
     * @param recorded under a GradientCollector (autograd's own saved tensors count too)
     */
    long decoderLayer(int index, boolean recorded) {
        long n = tokens();
        long h = config.hiddenSize();
        // Around attention and around the MLP: the norm on the float32 residual, its output cast to the compute dtype,
        // the block's output cast back to float32, the residual sum.
        long bytes = 2 * (rmsNorm(n) + residualCasts(n * h) + n * h * F32);
        bytes += attention(index, recorded);
        return bytes + (config.isMixtureOfExperts() ? sparseMoe(index, recorded)
                : swiGlu(linearsOf(index), 4, n, recorded));
    }

    /** DecoderLayer's casts of a block's input to the compute dtype and of its output to float32 (none in fp32). */
    private long residualCasts(long elements) {
        return s == F32 ? 0 : elements * (s + F32);
    }

    /**
     * The dequantized copies of a layer's NF4 weights, all of them: what autograd keeps for the gradient of each
     * x W^T when the whole step's graph is kept (no checkpointing).
     */
    long dequantizedWeights(int index) {
        return linearsOf(index).stream().filter(LinearLayers.Linear::nf4).mapToLong(l -> l.parameters() * s).sum();
    }

    /**
     * The largest of a layer's NF4 weights dequantized: all a checkpointed layer holds of them at once, since Nf4Linear
     * frees each right after its x W^T and RecomputedWeights dequantizes it again for the gradient of x.
     */
    long largestDequantizedWeight(int index) {
        return linearsOf(index).stream().filter(LinearLayers.Linear::nf4).mapToLong(l -> l.parameters() * s).max()
                .orElse(0);
    }

    /**
     * RecomputedWeights' leaves: every NF4 layer's output x W^T and the gradient it accumulates, kept until the layer's
     * arrays close (each expert's on its share of the k x tokens). Under an adapter the output is a leaf of its own
     * (LoraLinear frees its view of it; without one the model's arrays hold it anyway), and the adapters of the layers
     * that read one input (q, k, v; gate and up; w1 and w3) read it as one more leaf, whose gradient stays too.
     */
    long recomputedOutputs(int index) {
        List<LinearLayers.Linear> layer = linearsOf(index);
        long n = tokens();
        long bytes = 0;
        for (int j = 0; j < layer.size(); j++) {
            LinearLayers.Linear linear = layer.get(j);
            if (linear.nf4()) {
                long rowsIn = rowsInto(j, n);
                boolean adapted = linear.loraRank() > 0;
                bytes += rowsIn * linear.out() * s * (adapted ? 2 : 1);
                if (adapted && readsANewInput(j)) {
                    bytes += rowsIn * linear.in() * s;
                }
            }
        }
        return bytes;
    }

    /** The rows linear {@code j} of a layer reads: every token, or an expert's share of the k x tokens. */
    private long rowsInto(int j, long n) {
        boolean expert = config.isMixtureOfExperts() && j >= 5;
        return expert ? n * config.numExpertsPerTok() / config.numLocalExperts() : n;
    }

    /** Whether linear {@code j} of a layer reads another input than the one before it (k and v read q's, up gate's). */
    private boolean readsANewInput(int j) {
        if (j == 1 || j == 2) {
            return false;
        }
        int mlpIndex = config.isMixtureOfExperts() ? (j - 5) % 3 : j - 4;
        return mlpIndex != 1;
    }

    /** RmsNorm on the float32 residual with its float32 weight. */
    private long rmsNorm(long n) {
        long h = config.hiddenSize();
        return 3 * n * h * F32 + 3 * n * F32 + n * h * F32; // square, mean, + eps, sqrt, divide; times the weight
    }

    private long attention(int index, boolean recorded) {
        List<LinearLayers.Linear> layer = linearsOf(index);
        long n = tokens();
        long d = config.headDim();
        long heads = config.numAttentionHeads();
        long kvHeads = config.numKeyValueHeads();
        long bytes = linear(layer.get(0), n, recorded) + linear(layer.get(1), n, recorded)
                + linear(layer.get(2), n, recorded);
        bytes += rotate(n * heads * d) + rotate(n * kvHeads * d);
        // The scores [B, heads, T, T]: no fused attention in DJL, so they are materialised, scaled, masked, softmaxed.
        long scores = rows * heads * length * length;
        // Casts.softmaxInFloat32 frees its float32 copies: autograd keeps the softmax's output for the backward.
        bytes += 3 * scores * s + (s == F32 ? scores * F32 : scores * s + (recorded ? scores * F32 : 0));
        if (recorded) {
            bytes += n * kvHeads * d * s; // matmul's contiguous copy of the transposed v, saved for backward
        }
        bytes += 2 * n * heads * d * s; // probabilities x v, and the heads merged back (a copy: it was transposed)
        return bytes + linear(layer.get(3), n, recorded);
    }

    /** RotaryEmbedding.rotate: -second half, both halves concatenated, x cos, rotated sin, the sum. */
    private long rotate(long elements) {
        return elements * s / 2 + 4 * elements * s;
    }

    /**
     * down(silu(gate(x)) * up(x)) on {@code n} tokens, the three layers at {@code first}, +1, +2 of the list (gate, up,
     * down in Mistral's order; w1, w3, w2 for an expert).
     */
    private long swiGlu(List<LinearLayers.Linear> layer, int first, long n, boolean recorded) {
        long inter = config.intermediateSize();
        return linear(layer.get(first), n, recorded) + 2 * n * inter * s + linear(layer.get(first + 1), n, recorded)
                + n * inter * s + linear(layer.get(first + 2), n, recorded);
    }

    /**
     * SparseMoeBlock: the router (routing in float32), top-k, the gathered inputs sorted by expert, every expert on
     * its share (k x tokens in all; each expert's share taken as equal), the outputs concatenated, unsorted, weighted
     * and summed.
     */
    private long sparseMoe(int index, boolean recorded) {
        List<LinearLayers.Linear> layer = linearsOf(index);
        long n = tokens();
        long h = config.hiddenSize();
        long experts = config.numLocalExperts();
        long k = config.numExpertsPerTok();
        long bytes = linear(layer.get(4), n, recorded);
        bytes += (s == F32 ? 0 : n * experts * F32) + n * experts * F32 + n * k * (F32 + I64) + n * F32 + n * k * F32
                + (s == F32 ? 0 : n * k * s);
        bytes += 2 * n * k * I64 + n * k * h * s; // pair indices; the gathered expert inputs
        long share = n * k / experts;
        for (int e = 0; e < experts; e++) {
            bytes += swiGlu(layer, 5 + 3 * e, share, recorded);
        }
        return bytes + 3 * n * k * h * s + n * h * s; // concatenated, unsorted, weighted; summed over the k
    }

    /**
     * A linear layer on {@code n} tokens: its output. With an adapter, PEFT's y + B(A(dropout(x))) x scale with the
     * adapter in float32 (x cast up, the sum taken in float32 and cast back): LoraLinear frees its intermediates once
     * the output exists, so what stays beside the output is what autograd keeps for the backward: the dropout mask
     * and A's input (the dropped x, or its float32 copy), A x, and in float16 the float32 sum (the cast back keeps it).
     */
    long linear(LinearLayers.Linear layer, long n, boolean recorded) {
        long bytes = n * layer.out() * s;
        if (layer.loraRank() == 0 || !recorded) {
            return bytes;
        }
        if (dropout) {
            bytes += n * layer.in() * (gpu ? 1 : s) + (s == F32 ? n * layer.in() * s : 0);
        }
        if (s != F32) {
            bytes += n * layer.in() * F32 + n * layer.out() * F32;
        }
        return bytes + n * layer.loraRank() * F32;
    }

    /**
     * CausalLmLoss.crossEntropySum on {@code targets} positions: the final norm on every token, the predicting rows
     * gathered, logits on those rows only, float32 log-softmax, the targets' log-probabilities. When training forms the
     * head's gradient itself ({@link #headByHand}) the logits exist one chunk at a time in the forward and are freed
     * there ({@link #headBackward}); what stays is the gathered rows, their gradient and the objective's product.
     */
    long head(long targets, boolean recorded) {
        long v = config.vocabSize();
        long h = config.hiddenSize();
        long bytes = rmsNorm(tokens()) + targets * I64 + targets * h * F32;
        if (recorded && headByHand()) {
            // The gradient in the head's dtype, cast to the states' float32, and the objective's product.
            return bytes + targets * h * (headBytes() + (headBytes() == F32 ? 0 : F32) + F32) + targets * I64;
        }
        bytes += (headBytes() == F32 ? 0 : targets * h * s); // the states cast to the head's (compute) dtype
        bytes += linear(linears.lmHead(), targets, recorded);
        if (linears.lmHead().nf4()) {
            bytes += linears.lmHead().parameters() * s;
        }
        bytes += (s == F32 ? 0 : targets * v * F32) + targets * v * F32;
        return bytes + targets * (F32 + I64);
    }

    /**
     * The head's widest working memory, for one chunk of target positions (CausalLmLoss computes the logits a chunk at
     * a time): in backward, the gradient of the log-softmax's output and of its input, both float32; or, when training
     * forms the head's gradient itself, in the forward: the chunk's logits, their float32 copy, its softmax (become
     * softmax - one-hot) and that cast back.
     */
    long headBackward(long targets) {
        long chunkRows = Math.min(targets, CausalLmLoss.logitsChunkRows(config));
        long chunk = chunkRows * config.vocabSize();
        if (!headByHand()) {
            return 2 * chunk * F32;
        }
        int hs = headBytes();
        return chunk * (hs + F32 + (hs == F32 ? 0 : F32 + hs)) + (hs == F32 ? 0 : chunkRows * config.hiddenSize() * hs);
    }

    /** The lm_head's dtype: a head tied to the float32 embeddings computes in float32, an untied one in s. */
    private int headBytes() {
        return config.tieWordEmbeddings() ? F32 : s;
    }

    /** Whether training forms the lm_head's input gradient without autograd (CausalLmLoss.headGradient). */
    private boolean headByHand() {
        return !linears.lmHead().nf4() && linears.lmHead().loraRank() == 0;
    }

    /**
     * Decoder layer {@code index}'s backward at its widest, beyond what its forward left: the attention scores'
     * gradient in and out of the float32 softmax, or the MLP's three intermediate gradients (k x tokens of them in an
     * MoE block), whichever is larger; plus the residual stream's gradient arriving and the one being summed, float32.
     * In float16 the probabilities' gradient arrives in float16 and the narrowing cast's backward widens it, but that
     * float16 gradient is released before the softmax's backward allocates its output, so the widest moment is the
     * two float32 gradients either way (PeakMemoryProbe, tiny-mistral fp16: 55-59 MiB over the forward's 302, where
     * the float16 one counted too gave 81). When the step's backward releases the graph as it goes (no checkpointing),
     * by the softmax's backward autograd has released what it alone kept for every linear layer after the attention
     * ({@link #releasedBeforeAttentionBackward}); a recomputed layer's graph is retained until its arrays close
     * (RecomputedWeights runs later cuts through it again), so nothing is released there.
     */
    long layerBackward(int index, boolean graphRetained) {
        long n = tokens();
        long scores = rows * config.numAttentionHeads() * length * length;
        long mlpTokens = config.isMixtureOfExperts() ? n * config.numExpertsPerTok() : n;
        long mlp = 3 * mlpTokens * config.intermediateSize() * F32;
        long softmax = 2 * scores * F32 - (graphRetained ? 0 : releasedBeforeAttentionBackward(index));
        return Math.max(softmax, mlp) + 2 * n * config.hiddenSize() * F32;
    }

    /**
     * What autograd alone keeps (no DJL array holds it) for the linear layers that run after the attention softmax in
     * layer {@code index}, o_proj and the MLP's (router and experts, each expert on its share of the k x tokens): the
     * adapter's part of {@link #linear} and an NF4 layer's dequantized weight (Nf4Linear closes its array, mm saves
     * it). The backward releases each as it leaves that op, before it reaches the softmax.
     */
    long releasedBeforeAttentionBackward(int index) {
        List<LinearLayers.Linear> layer = linearsOf(index);
        long n = tokens();
        long bytes = 0;
        for (int j = 3; j < layer.size(); j++) {
            LinearLayers.Linear linear = layer.get(j);
            long rowsIn = rowsInto(j, n);
            bytes += linear(linear, rowsIn, true) - linear(linear, rowsIn, false)
                    + (linear.nf4() ? linear.parameters() * s : 0);
        }
        return bytes;
    }

    /** The load-balancing loss over all layers' router logits: concatenated, float32, softmax, top-k, one-hot. */
    long loadBalancing() {
        if (!config.isMixtureOfExperts()) {
            return 0;
        }
        long routed = config.numHiddenLayers() * tokens();
        long experts = config.numLocalExperts();
        long k = config.numExpertsPerTok();
        long perPass = routed * experts * (s + (s == F32 ? 0 : F32) + F32) + routed * k * (F32 + I64)
                + routed * k * experts * (I64 + F32) + routed * experts * F32;
        return 2 * perPass; // the load (top-k counts) and the loss itself each concatenate and softmax the logits
    }

    private List<LinearLayers.Linear> linearsOf(int index) {
        return linears.decoderLayers().get(index);
    }
}
