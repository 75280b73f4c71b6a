package io.mixtune.lora.nf4;

import io.mixtune.model.checkpoint.MistralCheckpoint;
import java.util.function.Predicate;

/**
 * Loads a checkpoint with its linear layers in NF4: each weight is quantized as it streams out of the safetensors
 * file and its fp32 copy dropped, so peak memory is the quantized model plus one fp32 tensor.
 *
 * <p>On a GPU the codes are uploaded once and dequantized there ({@link Nf4DeviceTensor}); the Java heap keeps no
 * copy. On the CPU they stay on the Java heap and are dequantized in Java, which measured faster than libtorch ops on
 * a CPU (bench Nf4DequantizeBenchmark: 5632x2048 in 167 ms against 262 ms, 2048x2048 in 60 ms against 125 ms,
 * tiny-mixtral's 128x64 in 0.35 ms against 0.84 ms), with results equal bit for bit either way.
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
        Nf4DeviceTensor.Codebooks[] codebooks = new Nf4DeviceTensor.Codebooks[1]; // one set per load, made at first use
        return (moduleName, weight, shape, manager) -> {
            if (keepFullPrecision.test(moduleName)) {
                return MistralCheckpoint.DENSE.create(moduleName, weight, shape, manager);
            }
            Nf4Tensor quantized = Nf4Tensor.quantize(weight, shape.getShape(), true);
            if (!manager.getDevice().isGpu()) {
                return new Nf4Linear(quantized);
            }
            if (codebooks[0] == null) {
                codebooks[0] = new Nf4DeviceTensor.Codebooks(manager);
            }
            return new Nf4Linear(Nf4DeviceTensor.upload(quantized, codebooks[0], manager));
        };
    }
}
