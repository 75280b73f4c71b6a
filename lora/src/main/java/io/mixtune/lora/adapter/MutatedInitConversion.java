package io.mixtune.lora.adapter;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A PiSSA or OLoRA adapter as the plain LoRA adapter of the original base that PEFT 0.21 writes with
 * save_pretrained(..., path_initial_model_for_weight_conversion=...) (peft_model.py, and tuners/lora/model.py
 * subtract_mutated_init): since W = W_res + s B0 A0 and the trained model computes W_res + s B A, its change from W is
 * s (B A - B0 A0) = s [B | -B0] [A ; A0], a LoRA of rank 2r with the same scale: r, lora_alpha (times sqrt 2 with
 * rslora, else 2), rank_pattern and alpha_pattern doubled, init_lora_weights true.
 */
final class MutatedInitConversion {
    private MutatedInitConversion() {}

    /** The converted adapter's config. */
    static LoraConfig config(LoraConfig trained) {
        Map<String, Integer> ranks = new LinkedHashMap<>();
        trained.rankPattern().forEach((key, rank) -> ranks.put(key, 2 * rank));
        Map<String, Double> alphas = new LinkedHashMap<>();
        trained.alphaPattern().forEach((key, alpha) -> alphas.put(key, 2 * alpha));
        double alpha = trained.useRslora() ? trained.alpha() * Math.sqrt(2) : 2 * trained.alpha();
        return new LoraConfig(2 * trained.r(), alpha, trained.dropout(), trained.targetModules(), trained.useRslora(),
                ranks, alphas, trained.selection(), trained.useDora());
    }

    /** [A ; A0] [2r, in] and [B | -B0] [out, 2r], arrays of {@code manager}'s. */
    static NDArray[] factors(LoraLinear.Adapter adapter, float[][] initial, NDManager manager) {
        NDArray a = adapter.a();
        NDArray b = adapter.b();
        NDArray a0 = manager.create(initial[0], a.getShape()).toDevice(a.getDevice(), false);
        NDArray b0 = manager.create(initial[1], b.getShape()).toDevice(b.getDevice(), false);
        NDArray stackedA = a.concat(a0, 0);
        NDArray stackedB = b.concat(b0.neg(), 1);
        stackedA.attach(manager);
        stackedB.attach(manager);
        return new NDArray[] {stackedA, stackedB};
    }
}
