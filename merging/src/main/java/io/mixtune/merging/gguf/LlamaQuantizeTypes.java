package io.mixtune.merging.gguf;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The type llama.cpp's llama-quantize (src/llama-quant.cpp, with its options: {@link Options}) gives each tensor of
 * an f32 GGUF file for a k-quant file type: tensor_allows_quantization, llama_tensor_get_type_impl's rules for the
 * file types mixtune writes (attn_v, attn_output and ffn_down get more bits, on the layers use_more_bits picks for _M,
 * the output matrix Q6_K, Mixtral-8x's attn_v/attn_k Q8_0 and attn_output Q5_K; the q2_k_s, iq4 and has_imatrix
 * rules), --tensor-type overrides, and tensor_type_fallback for rows that are not whole 256-value super-blocks (Q2_K
 * and Q3_K to Q4_0, Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, IQ4_XS to IQ4_NL, F16 where even that does not fit).
 * The counters walk the tensors in the order llama-quantize reads them ({@link #ORDER}).
 */
final class LlamaQuantizeTypes {
    private static final Pattern BLOCK = Pattern.compile("blk\\.(\\d+)\\..*");

    /**
     * llama_model_loader's weight_name_comparer (the key order of its weights_map, which llama-quantize writes in):
     * by layer number (tensors outside a layer, -1, first), then by name.
     */
    static final Comparator<String> ORDER = Comparator.comparingInt(LlamaQuantizeTypes::layer)
            .thenComparing(Comparator.naturalOrder());

    private LlamaQuantizeTypes() {}

    private static int layer(String name) {
        Matcher m = BLOCK.matcher(name);
        return m.matches() ? Integer.parseInt(m.group(1)) : -1;
    }

    /**
     * @param f32Types the f32 export's tensors (numpy shapes) and their types there, in llama-quantize's order
     * @param layers block_count; experts expert_count (0 for a dense model); heads and kvHeads the attention heads
     * @return the type of every tensor, in the same order
     */
    static Map<String, GgmlType> of(GgufFileType fileType, Map<String, long[]> shapes, Map<String, GgmlType> f32Types,
            int layers, int experts, int heads, int kvHeads) {
        return of(fileType, shapes, f32Types, layers, experts, heads, kvHeads, Options.NONE);
    }

    /**
     * llama-quantize's own options (tools/quantize/quantize.cpp into llama_model_quantize_params), as
     * llama_tensor_get_type applies them: {@code --pure} ({@link #pure}) every quantizable tensor the file type's
     * default type, no rule and no fallback; {@code --output-tensor-type} and {@code --token-embedding-type} that type
     * for output.weight / token_embd.weight, before any rule and without a fallback (with tied embeddings and no
     * --pure, the output type reaches token_embd through the output rule, then the fallback); {@code
     * --leave-output-tensor} output.weight not quantized at all (kept as the f32 file has it).
     *
     * @param outputTensorType null: none given
     * @param tokenEmbeddingType null: none given
     */
    record Options(boolean pure, GgmlType outputTensorType, GgmlType tokenEmbeddingType, boolean leaveOutputTensor,
            boolean imatrix, List<TensorType> tensorTypes) {
        static final Options NONE = new Options(false, null, null, false);

        Options {
            tensorTypes = List.copyOf(tensorTypes);
        }

        Options(boolean pure, GgmlType outputTensorType, GgmlType tokenEmbeddingType, boolean leaveOutputTensor) {
            this(pure, outputTensorType, tokenEmbeddingType, leaveOutputTensor, false, List.of());
        }

        /**
         * With llama-quantize's {@code --imatrix} given (qs.has_imatrix: rules for Q5_0's and IQ4's ffn_down) and its
         * {@code --tensor-type} overrides in command-line order.
         */
        Options with(boolean hasImatrix, List<TensorType> overrides) {
            return new Options(pure, outputTensorType, tokenEmbeddingType, leaveOutputTensor, hasImatrix, overrides);
        }
    }

    /**
     * One {@code --tensor-type NAME=TYPE} of llama-quantize (tools/quantize/quantize.cpp parse_tensor_type): the name
     * lower-cased, a regular expression searched in each tensor's name (std::regex_search, read as Java's by {@link
     * EcmaScriptRegex}: POSIX classes, escaped letters and {@code &&} mean other things in Java); the first that
     * matches a tensor gives its type, in place of the file type's rules, then tensor_type_fallback; not with
     * {@code --pure}, and never for token_embd/output when --token-embedding-type/--output-tensor-type name one.
     */
    record TensorType(String pattern, GgmlType type) {
        boolean matches(String tensor) {
            return EcmaScriptRegex.compile(pattern, "--tensor-type " + pattern).matcher(tensor).find();
        }

        /** parse_tensor_type's checks, each refused with what to write instead. */
        static TensorType parse(String assignment) {
            int equals = assignment.indexOf('=');
            if (equals < 0) {
                throw new IllegalArgumentException("--tensor-type " + assignment + " is malformed; expected NAME=TYPE"
                        + " (a regular expression over tensor names, a ggml type), e.g. attn_v=q8_0");
            }
            if (equals == 0) {
                throw new IllegalArgumentException("--tensor-type " + assignment + " names no tensor; expected"
                        + " NAME=TYPE, e.g. attn_v=q8_0");
            }
            if (equals == assignment.length() - 1) {
                throw new IllegalArgumentException("--tensor-type " + assignment + " names no type; expected"
                        + " NAME=TYPE, e.g. attn_v=q8_0");
            }
            String name = assignment.substring(0, equals).toLowerCase(java.util.Locale.ROOT);
            EcmaScriptRegex.compile(name, "--tensor-type " + assignment);
            return new TensorType(name, GgmlType.parse("--tensor-type " + name + "=",
                    assignment.substring(equals + 1)));
        }
    }

    /**
     * tensor_requires_imatrix for the types mixtune writes: a Q2_K tensor of a Q2_K_S file, but token_embd and output
     * (llama-quantize refuses such a file without an imatrix, or with one that lacks the tensor).
     */
    static boolean requiresImatrix(String name, GgmlType type, GgufFileType fileType) {
        return type == GgmlType.Q2_K && fileType == GgufFileType.Q2_K_S && !name.equals("token_embd.weight")
                && !name.equals("output.weight");
    }

    /** As {@link #of(GgufFileType, Map, Map, int, int, int, int)}, with llama-quantize's options. */
    static Map<String, GgmlType> of(GgufFileType fileType, Map<String, long[]> shapes, Map<String, GgmlType> f32Types,
            int layers, int experts, int heads, int kvHeads, Options options) {
        List<String> names = new ArrayList<>(shapes.keySet());
        int attentionV = (int) names.stream().filter(n -> n.contains("attn_v.weight")).count();
        boolean tied = !names.contains("output.weight");
        boolean is70b = experts != 8 && layers == 80 && heads != kvHeads; // models/llama.cpp: LLM_TYPE_70B
        int attentionVSeen = 0;
        int ffnDownSeen = 0;
        Map<String, GgmlType> types = new LinkedHashMap<>();
        for (String name : names) {
            long[] shape = shapes.get(name);
            // tensor_allows_quantization: quantize_output_tensor false (--leave-output-tensor) keeps output.weight
            if (!allowsQuantization(name, shape) || options.leaveOutputTensor() && name.equals("output.weight")) {
                types.put(name, f32Types.get(name));
                continue;
            }
            long columns = shape[shape.length - 1];
            if (options.tokenEmbeddingType() != null && name.equals("token_embd.weight")) {
                types.put(name, whole(name, columns, options.tokenEmbeddingType(), "--token-embedding-type"));
                continue;
            }
            if (options.outputTensorType() != null && name.equals("output.weight")) {
                types.put(name, whole(name, columns, options.outputTensorType(), "--output-tensor-type"));
                continue;
            }
            GgmlType type = fileType.matrixType();
            if (options.pure()) {
                types.put(name, whole(name, columns, type, "--pure"));
                continue;
            }
            GgmlType manual = options.tensorTypes().stream().filter(t -> t.matches(name)).map(TensorType::type)
                    .findFirst().orElse(null);
            if (manual != null) {
                type = manual; // "applying manual override": no rule, and no rule's counter moves
            } else if (name.equals("output.weight") || tied && name.equals("token_embd.weight")) {
                if (options.outputTensorType() != null) {
                    type = options.outputTensorType(); // tied: token_embd.weight takes the output's type
                } else if (columns % type.blockSize() != 0) {
                    type = GgmlType.Q8_0;
                } else if (type != GgmlType.Q8_0) {
                    type = GgmlType.Q6_K;
                }
            } else if (name.equals("token_embd.weight")) {
                // no rule for the k-quant file types mixtune writes
            } else if (name.contains("attn_v.weight")) {
                if (fileType == GgufFileType.Q2_K) {
                    type = heads / kvHeads >= 4 ? GgmlType.Q4_K : GgmlType.Q3_K;
                } else if (fileType == GgufFileType.Q2_K_S && heads / kvHeads >= 4) {
                    type = GgmlType.Q4_K;
                } else if (fileType == GgufFileType.Q3_K_M) {
                    type = attentionVSeen < 2 ? GgmlType.Q5_K : GgmlType.Q4_K;
                } else if (fileType == GgufFileType.Q3_K_L) {
                    type = GgmlType.Q5_K;
                } else if ((fileType == GgufFileType.IQ4_NL || fileType == GgufFileType.IQ4_XS)
                        && heads / kvHeads >= 4) {
                    type = GgmlType.Q5_K;
                } else if ((fileType == GgufFileType.Q4_K_M || fileType == GgufFileType.Q5_K_M)
                        && useMoreBits(attentionVSeen, attentionV)) {
                    type = GgmlType.Q6_K;
                } else if (fileType == GgufFileType.Q4_K_S && attentionVSeen < 4) {
                    type = GgmlType.Q5_K;
                }
                if (is70b && (type == GgmlType.Q3_K || type == GgmlType.Q4_K)) {
                    type = GgmlType.Q5_K;
                }
                if (experts == 8) {
                    type = GgmlType.Q8_0;
                }
                attentionVSeen++;
            } else if (name.contains("attn_k.weight")) {
                if (experts == 8) {
                    type = GgmlType.Q8_0;
                }
            } else if (name.contains("attn_q.weight")) {
                // no rule for these file types
            } else if (name.contains("attn_output.weight")) {
                if (experts == 8) {
                    if (List.of(GgufFileType.Q2_K, GgufFileType.Q3_K_S, GgufFileType.Q3_K_M, GgufFileType.Q4_K_S,
                            GgufFileType.Q4_K_M, GgufFileType.IQ4_NL, GgufFileType.IQ4_XS).contains(fileType)) {
                        type = GgmlType.Q5_K;
                    }
                } else if (fileType == GgufFileType.Q2_K) {
                    type = GgmlType.Q3_K;
                } else if (fileType == GgufFileType.Q3_K_M) {
                    type = GgmlType.Q4_K;
                } else if (fileType == GgufFileType.Q3_K_L) {
                    type = GgmlType.Q5_K;
                }
            } else if (!name.contains("ffn_up") && !name.contains("ffn_gate") && name.contains("ffn_down")) {
                // layer_info: a MoE model's layer from the name (its experts' tensors need not be consecutive), a
                // dense model's from the count of ffn_down tensors seen
                int layer = Math.max(1, experts) > 1 ? layer(name) : ffnDownSeen;
                if (fileType == GgufFileType.Q2_K) {
                    type = GgmlType.Q3_K;
                } else if (fileType == GgufFileType.Q2_K_S) {
                    if (layer < layers / 8) {
                        type = GgmlType.Q4_K;
                    }
                } else if (fileType == GgufFileType.Q3_K_M) {
                    // arch != LLM_ARCH_FALCON: Q4_K past the first sixteenth whatever use_more_bits says
                    type = layer < layers / 16 ? GgmlType.Q5_K : GgmlType.Q4_K;
                } else if (fileType == GgufFileType.Q3_K_L) {
                    type = GgmlType.Q5_K;
                } else if (fileType == GgufFileType.Q4_K_M) {
                    if (useMoreBits(layer, layers)) {
                        type = GgmlType.Q6_K;
                    }
                } else if (layer < layers / 8 && (fileType == GgufFileType.IQ4_NL || fileType == GgufFileType.IQ4_XS)
                        && !options.imatrix()) {
                    type = GgmlType.Q5_K;
                } else if (fileType == GgufFileType.Q5_K_M && useMoreBits(layer, layers)) {
                    type = GgmlType.Q6_K;
                } else if (fileType == GgufFileType.Q4_K_S && layer < layers / 8) {
                    type = GgmlType.Q5_K;
                } else if (fileType == GgufFileType.Q5_0 && options.imatrix() && layer < layers / 8) {
                    // "Guard against craziness in the first few ffn_down layers", with an imatrix only
                    type = GgmlType.Q5_1;
                }
                ffnDownSeen++;
            }
            types.put(name, fallback(name, columns, type));
        }
        return types;
    }

    /** use_more_bits: the first and last eighth of the layers, and every third one between. */
    static boolean useMoreBits(int layer, int layers) {
        return layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
    }

    /** tensor_allows_quantization for a llama-architecture file: 2-D and 3-D weights but norms and the router. */
    private static boolean allowsQuantization(String name, long[] shape) {
        return shape.length >= 2 && name.endsWith("weight") && !name.contains("_norm.weight")
                && !name.contains("ffn_gate_inp.weight");
    }

    /**
     * A type llama-quantize gives without tensor_type_fallback: rows that are not whole blocks of it fail in
     * ggml_quantize_chunk (its --dry-run prints the type all the same), so they are refused here before anything is
     * written.
     */
    private static GgmlType whole(String name, long columns, GgmlType type, String option) {
        if (columns % type.blockSize() != 0) {
            throw new IllegalArgumentException(option + ": " + name + " has rows of " + columns + " values, not whole "
                    + type + " blocks of " + type.blockSize() + ", and llama-quantize falls back to no other type"
                    + " there (its quantization of the tensor fails); choose a type whose block divides " + columns
                    + (option.equals("--pure") ? ", or leave out --pure" : ""));
        }
        return type;
    }

    /** tensor_type_fallback for the types the k-quant file types pick. */
    private static GgmlType fallback(String name, long columns, GgmlType type) {
        if (columns % type.blockSize() == 0) {
            return type;
        }
        GgmlType fallback = switch (type) {
            case Q2_K, Q3_K -> GgmlType.Q4_0;
            case Q4_K -> GgmlType.Q5_0;
            case Q5_K -> GgmlType.Q5_1;
            case Q6_K -> GgmlType.Q8_0;
            case IQ4_XS -> GgmlType.IQ4_NL;
            default -> throw new IllegalArgumentException(name + ": rows of " + columns + " values are not whole "
                    + type + " blocks, and llama-quantize has no fallback type for " + type);
        };
        return columns % fallback.blockSize() == 0 ? fallback : GgmlType.F16;
    }
}
