package io.mixtune.merging.gguf;

import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.stream.Collectors;

/**
 * What {@code --type} asks of a GGUF export: the type of the matrices (llama.cpp's llama_ftype, written as
 * general.file_type), as convert_hf_to_gguf.py's {@code --outtype} names them (f32 ... q4_0), or as llama-quantize
 * names its file types (q4_1, q5_0, q5_1 and the k-quant mixes q4_k_m ...: the file llama-quantize makes of the f32
 * export, {@link #quantizeMix}). Norms,
 * other 1-D tensors and the MoE router stay F32 whatever the type, as both tools keep them.
 */
public enum GgufFileType {
    F32("f32", 0, GgmlType.F32, false),
    F16("f16", 1, GgmlType.F16, false),
    Q4_0("q4_0", 2, GgmlType.Q4_0, false),
    Q8_0("q8_0", 7, GgmlType.Q8_0, false),
    Q4_1("q4_1", 3, GgmlType.Q4_1, true),
    Q5_0("q5_0", 8, GgmlType.Q5_0, true),
    Q5_1("q5_1", 9, GgmlType.Q5_1, true),
    Q2_K("q2_k", 10, GgmlType.Q2_K, true),
    Q3_K_S("q3_k_s", 11, GgmlType.Q3_K, true),
    Q3_K_M("q3_k_m", 12, GgmlType.Q3_K, true),
    Q3_K_L("q3_k_l", 13, GgmlType.Q3_K, true),
    Q4_K_S("q4_k_s", 14, GgmlType.Q4_K, true),
    Q4_K_M("q4_k_m", 15, GgmlType.Q4_K, true),
    Q5_K_S("q5_k_s", 16, GgmlType.Q5_K, true),
    Q5_K_M("q5_k_m", 17, GgmlType.Q5_K, true),
    Q6_K("q6_k", 18, GgmlType.Q6_K, true),
    /** Q2_K with llama-quantize's Q2_K_S rules; its Q2_K matrices need an importance matrix, as llama-quantize's. */
    Q2_K_S("q2_k_s", 21, GgmlType.Q2_K, true),
    IQ4_NL("iq4_nl", 25, GgmlType.IQ4_NL, true),
    IQ4_XS("iq4_xs", 30, GgmlType.IQ4_XS, true);

    /**
     * llama-quantize's other types, refused by name: the iq1/iq2/iq3 types search lattice grids (ggml-quants.c's
     * iq2_init_impl/iq3_init_impl tables and neighbour maps) that have no byte-equal encoder here, nor have the TQ*,
     * MXFP4 and BF16 blocks.
     */
    private static final List<String> NOT_WRITTEN = List.of("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s",
            "iq2_m", "iq3_xxs", "iq3_xs", "iq3_s", "iq3_m", "tq1_0", "tq2_0", "mxfp4_moe", "bf16", "q1_0", "copy");

    private final String cliName;
    private final int id;
    private final GgmlType matrixType;
    private final boolean quantizeMix;

    GgufFileType(String cliName, int id, GgmlType matrixType, boolean quantizeMix) {
        this.cliName = cliName;
        this.id = id;
        this.matrixType = matrixType;
        this.quantizeMix = quantizeMix;
    }

    public String cliName() {
        return cliName;
    }

    /**
     * llama_ftype: LLAMA_FTYPE_ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q4_1 3, MOSTLY_Q8_0 7, MOSTLY_Q5_0 8,
     * MOSTLY_Q5_1 9, MOSTLY_Q2_K 10, Q3_K_S 11, Q3_K_M 12, Q3_K_L 13, Q4_K_S 14, Q4_K_M 15, Q5_K_S 16, Q5_K_M 17,
     * Q6_K 18, MOSTLY_Q2_K_S 21, MOSTLY_IQ4_NL 25, MOSTLY_IQ4_XS 30.
     */
    public int id() {
        return id;
    }

    /** The matrices' type; for a k-quant mix its default type (llama_ftype_get_default_type). */
    public GgmlType matrixType() {
        return matrixType;
    }

    /**
     * A llama-quantize type (the k-quant mixes, q4_1, q5_0, q5_1, q2_k_s, iq4_nl, iq4_xs): the file is what
     * llama-quantize (with the imatrix and overrides given) writes from the f32 export, its per-tensor types chosen by {@link LlamaQuantizeTypes}, the tensors in its order,
     * general.file_type last. The others (f32, f16, q8_0, q4_0) are convert_hf_to_gguf.py's {@code --outtype}.
     */
    public boolean quantizeMix() {
        return quantizeMix;
    }

    /** The type named as --type takes it (f32, f16, q8_0, q4_0, q4_k_m, ...; any case). */
    public static GgufFileType parse(String name) {
        String lower = name.toLowerCase(Locale.ROOT);
        for (GgufFileType type : values()) {
            if (type.cliName.equals(lower)) {
                return type;
            }
        }
        if (lower.equals("q3_k") || lower.equals("q4_k") || lower.equals("q5_k")) {
            // llama-quantize's aliases (tools/quantize: "alias for Q4_K_M"): one name per file type here
            throw new IllegalArgumentException("--type " + name + " is llama-quantize's alias of " + lower + "_m; write"
                    + " --type " + lower + "_m; expected one of " + Arrays.stream(values()).map(GgufFileType::cliName)
                            .collect(Collectors.joining(", ")));
        }
        if (NOT_WRITTEN.contains(lower)) {
            throw new IllegalArgumentException("--type " + name + " is a llama-quantize type mixtune does not write"
                    + " (its iq1/iq2/iq3 lattice grids, or ggml blocks mixtune does not encode); export --type f32"
                    + " and run llama-quantize on that file; expected one of "
                    + Arrays.stream(values()).map(GgufFileType::cliName).collect(Collectors.joining(", ")));
        }
        throw new IllegalArgumentException("--type " + name + " is not a GGUF type mixtune writes; expected one of "
                + Arrays.stream(values()).map(GgufFileType::cliName).collect(Collectors.joining(", ")));
    }
}
