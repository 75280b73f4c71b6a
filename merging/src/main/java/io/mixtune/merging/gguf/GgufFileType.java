package io.mixtune.merging.gguf;

import java.util.Arrays;
import java.util.Locale;
import java.util.stream.Collectors;

/**
 * What {@code --type} asks of a GGUF export: the type of the matrices (llama.cpp's llama_ftype, written as
 * general.file_type), as convert_hf_to_gguf.py's {@code --outtype} names them. Norms, other 1-D tensors and the MoE
 * router stay F32 whatever the type, as the converter keeps them.
 */
public enum GgufFileType {
    F32("f32", 0, GgmlType.F32),
    F16("f16", 1, GgmlType.F16),
    Q4_0("q4_0", 2, GgmlType.Q4_0),
    Q8_0("q8_0", 7, GgmlType.Q8_0);

    private final String cliName;
    private final int id;
    private final GgmlType matrixType;

    GgufFileType(String cliName, int id, GgmlType matrixType) {
        this.cliName = cliName;
        this.id = id;
        this.matrixType = matrixType;
    }

    public String cliName() {
        return cliName;
    }

    /** llama_ftype: LLAMA_FTYPE_ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q8_0 7. */
    public int id() {
        return id;
    }

    public GgmlType matrixType() {
        return matrixType;
    }

    /** The type named as --type takes it (f32, f16, q8_0, q4_0; any case). */
    public static GgufFileType parse(String name) {
        for (GgufFileType type : values()) {
            if (type.cliName.equals(name.toLowerCase(Locale.ROOT))) {
                return type;
            }
        }
        throw new IllegalArgumentException("--type " + name + " is not a GGUF type mixtune writes; expected one of "
                + Arrays.stream(values()).map(GgufFileType::cliName).collect(Collectors.joining(", ")));
    }
}
