package io.mixtune.trainer.run;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;

/**
 * NEFTune (Jain et al. 2023, "NEFTune: Noisy embeddings improve instruction finetuning") as transformers' Trainer
 * applies it with neftune_noise_alpha (integrations/neftune.py, a forward hook on the input embeddings in training
 * mode): uniform noise in [-m, m), m = alpha / sqrt(L x hidden), added to the embeddings [B, L, hidden]. L is the
 * sequence dimension of the batch the model sees: a padded batch's padded length (padding counts), and for packed rows
 * the micro-batch's real tokens, since TRL's SFTTrainer packs padding-free (one row of every token of the micro-batch;
 * packing_strategy wrapped's rows are a padded batch, as TRL collates them). Only SFT's training forwards add it;
 * evaluation, generation, DPO and reward models never do.
 *
 * <p>The noise is drawn from torch's generator seeded by the micro-batch's dropout seed (in a slot no layer's dropout
 * uses), so a resumed run draws the noise the uninterrupted one drew, and the dropout masks are those of a run
 * without noise.
 *
 * @param alpha the noise scale; 0: off
 */
public record EmbeddingNoise(double alpha) {
    /** No noise: the embeddings pass unchanged and no random number is drawn. */
    public static final EmbeddingNoise OFF = new EmbeddingNoise(0);

    /** train.neftune_noise_alpha: null is off. */
    public static EmbeddingNoise of(Double alpha) {
        return alpha == null ? OFF : new EmbeddingNoise(alpha);
    }

    public boolean isOff() {
        return alpha == 0;
    }

    /** The bound m = alpha / sqrt(L x hidden) of the noise on a batch's embeddings of width {@code hidden}. */
    public float magnitude(TrainingBatch batch, long hidden) {
        return (float) (alpha / Math.sqrt((double) noisedLength(batch) * hidden));
    }

    /** L: the padded length of a padded batch, the real tokens of packed rows (TRL's padding-free packing). */
    static long noisedLength(TrainingBatch batch) {
        return batch.sampleIds() != null ? batch.realTokens() : batch.length();
    }

    /**
     * The embeddings [B, T, hidden] plus the noise, drawn from {@code dropoutSeed}; the embeddings themselves when off.
     */
    public NDArray apply(NDArray embeddings, TrainingBatch batch, long dropoutSeed) {
        if (isOff()) {
            return embeddings;
        }
        float m = magnitude(batch, embeddings.getShape().get(2));
        CausalLmLoss.seedDropout(dropoutSeed, NOISE_SLOT);
        NDArray noise = embeddings.getManager().randomUniform(-m, m, embeddings.getShape(), DataType.FLOAT32,
                embeddings.getDevice());
        return embeddings.add(noise);
    }

    /** The dropout seed's slot of the noise: layer -1, which (seed - 1)'s layer 1008 would share; no model has one. */
    private static final int NOISE_SLOT = -1;
}
