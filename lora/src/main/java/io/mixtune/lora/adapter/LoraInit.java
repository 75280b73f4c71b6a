package io.mixtune.lora.adapter;

import com.fasterxml.jackson.annotation.JsonValue;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * How a fresh adapter starts, PEFT 0.21's init_lora_weights (tuners/lora/layer.py LoraLayer.update_layer):
 * {@code true} (A Kaiming-uniform, B zero), {@code gaussian} (A ~ N(0, (1/r)^2), B zero: reset_lora_parameters),
 * {@code orthogonal} (A and B from two halves of a random orthogonal matrix, B A = 0: orthogonal_init),
 * {@code pissa} and {@code pissa_niter_N} (A, B from the top r singular triplets of W, exact or torch.svd_lowrank with
 * N subspace iterations: pissa_init), {@code olora} (B, A the first r columns of Q and rows of R of W = QR: olora_init).
 * PiSSA and OLoRA take their first update out of the base weight ({@link #mutatesBase}); the adapter written then is
 * PEFT's conversion to a plain LoRA of rank 2r (io.mixtune.lora.init.MutatedInit). {@code loftq}: A, B from the NF4
 * quantisation error ({@link #loftq}).
 *
 * @param niter PiSSA's subspace iterations (pissa_niter_N, where 0 is Halko's range finder alone), {@value #EXACT} for
 *     PiSSA's exact SVD and for the other kinds
 */
public record LoraInit(Kind kind, int niter) {
    public enum Kind {
        PEFT_DEFAULT, GAUSSIAN, ORTHOGONAL, PISSA, OLORA, LOFTQ
    }

    /** No subspace iterations: the exact SVD (pissa), or a kind without any. */
    public static final int EXACT = -1;
    public static final LoraInit PEFT_DEFAULT = new LoraInit(Kind.PEFT_DEFAULT, EXACT);
    private static final Pattern PISSA_NITER = Pattern.compile("pissa_niter_(\\d+)");

    public LoraInit {
        if (niter < EXACT || niter != EXACT && kind != Kind.PISSA) {
            throw new IllegalArgumentException("niter " + niter + " is PiSSA's (pissa_niter_N, N >= 0)");
        }
    }

    /**
     * Reads PEFT's value (true, gaussian, pissa, pissa_niter_N, olora); refuses the others by name, saying what
     * mixtune lacks for them.
     */
    public static LoraInit parse(String value) {
        String lower = value.toLowerCase(Locale.ROOT);
        Matcher niter = PISSA_NITER.matcher(lower);
        if (niter.matches()) {
            // PEFT's int(...) of the suffix; 0 iterations is Halko's range finder alone
            try {
                return new LoraInit(Kind.PISSA, Integer.parseInt(niter.group(1)));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("pissa_niter_" + niter.group(1) + ": too many iterations", e);
            }
        }
        return switch (lower) {
            case "true" -> PEFT_DEFAULT;
            case "gaussian" -> new LoraInit(Kind.GAUSSIAN, EXACT);
            case "pissa" -> new LoraInit(Kind.PISSA, EXACT);
            case "olora" -> new LoraInit(Kind.OLORA, EXACT);
            case "false" -> throw refused(value, "B random too, so the adapter changes the model from its first step: "
                    + "PEFT's switch for tests; `mixtune init-adapter --init random` writes such an adapter");
            case "loftq" -> new LoraInit(Kind.LOFTQ, EXACT);
            case "orthogonal" -> new LoraInit(Kind.ORTHOGONAL, EXACT);
            case "corda" -> throw refused(value, "CorDA needs each layer's input covariance collected over a "
                    + "calibration set (PEFT's preprocess_corda), which mixtune does not collect");
            case "eva" -> throw refused(value, "EVA needs the SVD of each layer's activations over a calibration "
                    + "set (PEFT's initialize_lora_eva_weights), which mixtune does not collect");
            case "lora_ga" -> throw refused(value, "LoRA-GA needs each layer's gradient over calibration batches "
                    + "(PEFT's preprocess_loraga), which mixtune does not collect");
            case "mica" -> throw refused(value, "MiCA freezes B (PEFT's MiCALinearVariant), which mixtune's "
                    + "training does not do");
            default -> throw new IllegalArgumentException("\"" + value + "\": expected true, gaussian, orthogonal, "
                    + "pissa, pissa_niter_N, olora or loftq");
        };
    }

    private static IllegalArgumentException refused(String value, String why) {
        return new IllegalArgumentException("\"" + value + "\" is not offered: " + why);
    }

    /** PiSSA and OLoRA: the base weight loses the adapter's first update, W_res = W - scale B0 A0. */
    public boolean mutatesBase() {
        return kind == Kind.PISSA || kind == Kind.OLORA;
    }

    /**
     * LoftQ (Li et al. 2023) as PEFT's replace_lora_weights_loftq, the one-shot (loftq_iter 1) on the NF4 base:
     * B A = the top r of W - dequantize(NF4(W)); the base stays NF4(W), so the adapter is a plain one.
     */
    public boolean loftq() {
        return kind == Kind.LOFTQ;
    }

    /** An initialisation computed from the base weight as it loads (PiSSA, OLoRA, LoftQ). */
    public boolean readsBase() {
        return mutatesBase() || loftq();
    }

    /** PEFT's spelling, as a recipe and adapter_config.json hold it. */
    @JsonValue
    @Override
    public String toString() {
        return switch (kind) {
            case PEFT_DEFAULT -> "true";
            case GAUSSIAN -> "gaussian";
            case ORTHOGONAL -> "orthogonal";
            case PISSA -> niter == EXACT ? "pissa" : "pissa_niter_" + niter;
            case OLORA -> "olora";
            case LOFTQ -> "loftq";
        };
    }
}
