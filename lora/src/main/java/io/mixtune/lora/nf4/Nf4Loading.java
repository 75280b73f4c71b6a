package io.mixtune.lora.nf4;

import io.mixtune.model.checkpoint.MistralCheckpoint;
import java.util.function.Predicate;

/**
 * Loads a checkpoint with its linear layers in NF4: each weight is quantized as it streams out of the safetensors
 * file and its fp32 copy dropped, so peak memory is the quantized model plus one fp32 tensor.
 */
public final class Nf4Loading {
    private Nf4Loading() {}

    /**
     * QLoRA's choice: every linear layer of attention, MLP and experts in NF4 with double quantization; the lm_head
     * and the MoE router stay in full precision (they are small, and the router's top-k decisions are sensitive).
     */
    public static final Predicate<String> KEEP_FULL_PRECISION =
            name -> name.equals("lm_head") || name.endsWith("block_sparse_moe.gate");

    public static MistralCheckpoint.LinearFactory factory(Predicate<String> keepFullPrecision) {
        return (moduleName, weight, shape, manager) -> keepFullPrecision.test(moduleName)
                ? MistralCheckpoint.DENSE.create(moduleName, weight, shape, manager)
                : new Nf4Linear(Nf4Tensor.quantize(weight, shape.getShape(), true));
    }
}
