package io.mixtune.trainer.optim;

import java.util.List;

/**
 * LoRA+ (Hayou et al. 2024) as PEFT's {@code create_loraplus_optimizer} groups the parameters: lora_B trains at
 * {@code lr x loraplus_lr_ratio}, a LoRA embedding's A and B at {@code loraplus_lr_embedding} (an absolute rate, which
 * the schedule scales as LambdaLR scales that group's initial lr), everything else at lr. The factor on the schedule's
 * rate is a function of the parameter's name and the recipe alone, so a resumed run recomputes it.
 */
public final class LoraPlus {
    private LoraPlus() {}

    /**
     * Each parameter's factor on the schedule's learning rate; null when {@code ratio} is null (LoRA+ off: AdamW's
     * single group).
     *
     * @param names the parameters' names, PEFT's (…lora_A.weight, …lora_B.weight, …lora_embedding_A)
     * @param lr the schedule's base rate (train.lr)
     * @param ratio loraplus_lr_ratio, null: off
     * @param embeddingLr loraplus_lr_embedding
     */
    public static double[] lrFactors(List<String> names, double lr, Double ratio, double embeddingLr) {
        if (ratio == null) {
            return null;
        }
        double[] factors = new double[names.size()];
        for (int i = 0; i < factors.length; i++) {
            factors[i] = factor(names.get(i), lr, ratio, embeddingLr);
        }
        return factors;
    }

    static double factor(String name, double lr, double ratio, double embeddingLr) {
        // PEFT tests the tuner layer's type (lora.Embedding); its parameters, and only they, are lora_embedding_A/B.
        if (name.contains("lora_embedding_")) {
            return embeddingLr / lr;
        }
        // PEFT also puts every 1-d parameter in group B (loraplus.py: "lora_B" in name or param.ndim == 1): DoRA's
        // magnitude is mixtune's only one.
        return name.contains("lora_B") || name.contains("lora_magnitude_vector") ? ratio : 1;
    }
}
