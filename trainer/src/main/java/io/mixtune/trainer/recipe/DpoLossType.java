package io.mixtune.trainer.recipe;

import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * TRL 1.13's DPOTrainer loss types (its {@code loss_type} values, spelled as TRL spells them), and which of the dpo
 * section's hyper-parameters each reads. The formulas are in {@code io.mixtune.trainer.dpo.DpoLoss}; TRL's "sft" type
 * is {@code dpo.sft_weight} here.
 */
public enum DpoLossType {
    SIGMOID(false, false, true),
    HINGE(false, false, true),
    IPO(false, false, true),
    EXO_PAIR(true, false, true),
    NCA_PAIR(false, false, false),
    ROBUST(true, false, true),
    BCO_PAIR(false, false, false),
    SPPO_HARD(false, false, false),
    AOT(true, false, false),
    AOT_UNPAIRED(true, false, false),
    APO_ZERO(false, false, false),
    APO_DOWN(false, false, false),
    DISCOPOP(false, true, true),
    SIGMOID_NORM(false, false, true);

    private final boolean readsLabelSmoothing;
    private final boolean readsDiscopopTau;
    private final boolean takesFDivergence;

    DpoLossType(boolean readsLabelSmoothing, boolean readsDiscopopTau, boolean takesFDivergence) {
        this.readsLabelSmoothing = readsLabelSmoothing;
        this.readsDiscopopTau = readsDiscopopTau;
        this.takesFDivergence = takesFDivergence;
    }

    /** TRL's name: sigmoid, exo_pair, ... */
    public String trlName() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** Whether TRL's formula reads label_smoothing (the others ignore it). */
    public boolean readsLabelSmoothing() {
        return readsLabelSmoothing;
    }

    /** Whether TRL's formula reads discopop_tau. */
    public boolean readsDiscopopTau() {
        return readsDiscopopTau;
    }

    /**
     * Whether TRL's formula is built on the chosen - rejected difference of the log-ratios, which an f-divergence other
     * than reverse KL replaces (TRL 1.13 refuses f_divergence_type for the others: their beta log Z(x) would not
     * cancel).
     */
    public boolean takesFDivergence() {
        return takesFDivergence;
    }

    /** The loss type TRL calls {@code name}, or null. */
    public static DpoLossType of(String name) {
        return Arrays.stream(values()).filter(t -> t.trlName().equals(name)).findFirst().orElse(null);
    }

    /** All of TRL's names, in TRL's order. */
    public static List<String> trlNames() {
        return Arrays.stream(values()).map(DpoLossType::trlName).toList();
    }
}
