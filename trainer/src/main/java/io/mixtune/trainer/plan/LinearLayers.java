package io.mixtune.trainer.plan;

import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.nf4.Nf4Loading;
import io.mixtune.lora.nf4.Nf4Tensor;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.trainer.optim.AdamW8bit;
import java.util.ArrayList;
import java.util.List;

/**
 * A model's linear layers as config.json and the recipe describe them, without loading anything: each one's shape
 * under its Hugging Face module name, whether QLoRA stores it in NF4 ({@link Nf4Loading#KEEP_FULL_PRECISION} keeps the
 * router and lm_head in full precision, as loading does), and the LoRA rank the adapter gives it (0: none).
 */
record LinearLayers(List<List<Linear>> decoderLayers, Linear lmHead) {

    /** One linear layer [out, in]; dora: its adapter has DoRA's magnitude. */
    record Linear(String name, long in, long out, boolean nf4, int loraRank, boolean dora) {
        long parameters() {
            return in * out;
        }

        /** A [r, in] and B [out, r], and DoRA's magnitude [out]. */
        long loraParameters() {
            return (long) loraRank * (in + out) + (dora ? out : 0);
        }

        /**
         * What DoRA's weight norm holds for an instant (LoraLinear.weightNormOf): W (dequantized in the compute dtype
         * when NF4) cast to float32 when it is not, then B A, scale B A and W + scale B A in float32.
         */
        long doraNormBytes(int computeBytes) {
            return dora ? parameters() * ((nf4 ? computeBytes : 0) + (computeBytes != 4 ? 4 : 0) + 12) : 0;
        }

        /** What {@link Nf4Tensor} stores: two codes a byte, an 8-bit absmax per 64, an fp32 scale per 256 of those. */
        long nf4Bytes() {
            long count = parameters();
            long blocks = (count + Nf4Tensor.BLOCK_SIZE - 1) / Nf4Tensor.BLOCK_SIZE;
            long scales = (blocks + Nf4Tensor.ABSMAX_BLOCK_SIZE - 1) / Nf4Tensor.ABSMAX_BLOCK_SIZE;
            return (count + 1) / 2 + blocks + 4 * scales + 4;
        }
    }

    static LinearLayers of(ModelConfig c, boolean nf4, LoraConfig lora) {
        long h = c.hiddenSize();
        long inter = c.intermediateSize();
        long queries = (long) c.numAttentionHeads() * c.headDim();
        long keysValues = (long) c.numKeyValueHeads() * c.headDim();
        List<List<Linear>> layers = new ArrayList<>();
        for (int i = 0; i < c.numHiddenLayers(); i++) {
            String p = "model.layers." + i;
            List<Linear> layer = new ArrayList<>();
            layer.add(linear(p + ".self_attn.q_proj", h, queries, nf4, lora));
            layer.add(linear(p + ".self_attn.k_proj", h, keysValues, nf4, lora));
            layer.add(linear(p + ".self_attn.v_proj", h, keysValues, nf4, lora));
            layer.add(linear(p + ".self_attn.o_proj", queries, h, nf4, lora));
            if (c.isMixtureOfExperts()) {
                layer.add(linear(p + ".block_sparse_moe.gate", h, c.numLocalExperts(), nf4, lora));
                for (int j = 0; j < c.numLocalExperts(); j++) {
                    String e = p + ".block_sparse_moe.experts." + j;
                    layer.add(linear(e + ".w1", h, inter, nf4, lora));
                    layer.add(linear(e + ".w3", h, inter, nf4, lora));
                    layer.add(linear(e + ".w2", inter, h, nf4, lora));
                }
            } else {
                layer.add(linear(p + ".mlp.gate_proj", h, inter, nf4, lora));
                layer.add(linear(p + ".mlp.up_proj", h, inter, nf4, lora));
                layer.add(linear(p + ".mlp.down_proj", inter, h, nf4, lora));
            }
            layers.add(List.copyOf(layer));
        }
        // A tied lm_head is the embedding matrix itself: no layer of its own, nothing for an adapter to wrap.
        Linear lmHead = c.tieWordEmbeddings() ? new Linear("lm_head", h, c.vocabSize(), false, 0, false)
                : linear("lm_head", h, c.vocabSize(), nf4, lora);
        return new LinearLayers(List.copyOf(layers), lmHead);
    }

    private static Linear linear(String name, long in, long out, boolean nf4, LoraConfig lora) {
        return new Linear(name, in, out, nf4 && !Nf4Loading.KEEP_FULL_PRECISION.test(name),
                lora.targets(name) ? lora.rankOf(name) : 0, lora.targets(name) && lora.useDora());
    }

    List<Linear> all() {
        List<Linear> all = new ArrayList<>();
        decoderLayers.forEach(all::addAll);
        all.add(lmHead);
        return all;
    }

    long nf4Parameters() {
        return all().stream().filter(Linear::nf4).mapToLong(Linear::parameters).sum();
    }

    long nf4Bytes() {
        return all().stream().filter(Linear::nf4).mapToLong(Linear::nf4Bytes).sum();
    }

    /** Linear weights held in the compute dtype (not NF4); a tied lm_head is counted with the embeddings instead. */
    long fullPrecisionLinearParameters(boolean tiedHead) {
        return all().stream().filter(l -> !l.nf4() && !(tiedHead && l == lmHead)).mapToLong(Linear::parameters).sum();
    }

    long loraParameters() {
        return all().stream().mapToLong(Linear::loraParameters).sum();
    }

    /** bitsandbytes' 8-bit AdamW state of every adapter array: A [r, in], B [out, r], DoRA's magnitude [out]. */
    long adamW8bitStateBytes() {
        return all().stream().filter(l -> l.loraRank() > 0).mapToLong(l -> AdamW8bit.stateBytes(l.loraRank() * l.in())
                + AdamW8bit.stateBytes(l.out() * l.loraRank()) + (l.dora() ? AdamW8bit.stateBytes(l.out()) : 0)).sum();
    }

    long adaptedLayers() {
        return all().stream().filter(l -> l.loraRank() > 0).count();
    }

    long doraLayers() {
        return all().stream().filter(Linear::dora).count();
    }

    /** The largest {@link Linear#doraNormBytes}: one layer's weight norm at a time. */
    long doraNormBytes(int computeBytes) {
        return all().stream().mapToLong(l -> l.doraNormBytes(computeBytes)).max().orElse(0);
    }

    /**
     * The float32 base weights that DoRA with dropout keeps for its backward (the base output recomputed on the
     * dropped input, x' W^T, as PEFT does), of decoder layer {@code index}.
     */
    long doraDropoutWeightBytes(int index) {
        return decoderLayers.get(index).stream().filter(Linear::dora).mapToLong(l -> l.parameters() * 4).sum();
    }

    /** The largest NF4 weight, in elements: the dequantization staging buffer's size. */
    long largestNf4() {
        return all().stream().filter(Linear::nf4).mapToLong(Linear::parameters).max().orElse(0);
    }
}
