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
    SIGMOID(false, false),
    HINGE(false, false),
    IPO(false, false),
    EXO_PAIR(true, false),
    NCA_PAIR(false, false),
    ROBUST(true, false),
    BCO_PAIR(false, false),
    SPPO_HARD(false, false),
    AOT(true, false),
    AOT_UNPAIRED(true, false),
    APO_ZERO(false, false),
    APO_DOWN(false, false),
    DISCOPOP(false, true),
    SIGMOID_NORM(false, false);

    private final boolean readsLabelSmoothing;
    private final boolean readsDiscopopTau;

    DpoLossType(boolean readsLabelSmoothing, boolean readsDiscopopTau) {
        this.readsLabelSmoothing = readsLabelSmoothing;
        this.readsDiscopopTau = readsDiscopopTau;
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

    /** The loss type TRL calls {@code name}, or null. */
    public static DpoLossType of(String name) {
        return Arrays.stream(values()).filter(t -> t.trlName().equals(name)).findFirst().orElse(null);
    }

    /** All of TRL's names, in TRL's order. */
    public static List<String> trlNames() {
        return Arrays.stream(values()).map(DpoLossType::trlName).toList();
    }
}
