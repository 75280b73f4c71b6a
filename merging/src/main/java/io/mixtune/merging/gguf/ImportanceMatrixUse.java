package io.mixtune.merging.gguf;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Map;

/**
 * What llama-quantize does with an importance matrix around the quantizers (tools/quantize/quantize.cpp's kv
 * overrides, src/llama-quant.cpp's llama_model_quantize_impl): the quantize.imatrix.* keys it writes, which tensor
 * takes which entry, and what it refuses.
 */
final class ImportanceMatrixUse {
    /** llama_model_kv_override's val_str: 128 bytes, the strncpy'd value cut to 127. */
    private static final int KV_STRING_BYTES = 127;

    private ImportanceMatrixUse() {}

    /**
     * quantize.imatrix.file (the path as given), quantize.imatrix.dataset (the first dataset, where there is one),
     * quantize.imatrix.entries_count (u32) and quantize.imatrix.chunks_count (u32, where the file has chunks), after
     * general.file_type: the kv overrides llama_model_quantize_impl sets after copying the input's keys.
     */
    static void putMetadata(GgufWriter writer, String argument, ImportanceMatrix matrix) {
        writer.putStringBytes("quantize.imatrix.file", cut(argument));
        if (!matrix.datasets().isEmpty()) {
            writer.putStringBytes("quantize.imatrix.dataset", cut(matrix.datasets().get(0)));
        }
        writer.putUint32("quantize.imatrix.entries_count", matrix.weights().size());
        if (matrix.chunkCount() > 0) {
            writer.putUint32("quantize.imatrix.chunks_count", matrix.chunkCount());
        }
    }

    /**
     * strncpy's bytes: up to a NUL, at most 127, cut inside a UTF-8 character where byte 127 falls in one (decoding
     * them would write U+FFFD's three bytes in place of llama-quantize's one).
     */
    private static byte[] cut(String value) {
        byte[] bytes = value.getBytes(StandardCharsets.UTF_8);
        int length = 0;
        while (length < Math.min(bytes.length, KV_STRING_BYTES) && bytes[length] != 0) {
            length++;
        }
        return Arrays.copyOf(bytes, length);
    }

    /**
     * Gives every quantized tensor (a type other than the f32 file's) its entry, as llama_model_quantize_impl looks
     * it up: none (quantized without) where the file lacks it, and refuses what llama-quantize refuses, before
     * anything is written: an entry of another size than ne0 * experts (but for token_embd, which is quantized
     * without), and a tensor that needs an imatrix (Q2_K of a q2_k_s file) without one.
     *
     * @param matrix null: no --imatrix
     */
    static void assign(GgufWriter writer, GgufFileType fileType, Map<String, long[]> shapes,
            Map<String, GgmlType> f32Types, Map<String, GgmlType> types, ImportanceMatrix matrix, String argument) {
        for (Map.Entry<String, GgmlType> tensor : types.entrySet()) {
            String name = tensor.getKey();
            if (tensor.getValue() == f32Types.get(name)) {
                continue; // not quantized: llama-quantize copies it and looks nothing up
            }
            boolean required = LlamaQuantizeTypes.requiresImatrix(name, tensor.getValue(), fileType);
            if (matrix == null) {
                if (required) {
                    throw new IllegalArgumentException("--type " + fileType.cliName() + " requires an importance matrix"
                            + " (llama-quantize: \"this quantization requires an imatrix!\"; offending tensor: " + name
                            + ", target type " + tensor.getValue() + "); pass --imatrix FILE from llama-imatrix");
                }
                continue;
            }
            float[] weights = matrix.weights().get(name);
            long[] shape = shapes.get(name);
            long expected = shape[shape.length - 1] * (shape.length == 3 ? shape[0] : 1);
            if (weights != null && weights.length != expected) {
                if (!name.equals("token_embd.weight")) {
                    throw new IllegalArgumentException("--imatrix " + argument + ": " + name + " has " + weights.length
                            + " weights where the tensor has " + expected + " columns (times experts); llama-quantize"
                            + " refuses it (\"imatrix size is different from tensor size\"): the imatrix is of"
                            + " another model");
                }
                weights = null;
            }
            if (weights == null && required) {
                throw new IllegalArgumentException("--imatrix " + argument + " has no entry for " + name + ", which --type "
                        + fileType.cliName() + " quantizes as " + tensor.getValue() + " (llama-quantize: \"Missing"
                        + " importance matrix for tensor " + name + " in a very low-bit quantization\")");
            }
            if (weights != null) {
                writer.importance(name, weights);
            }
        }
    }
}
