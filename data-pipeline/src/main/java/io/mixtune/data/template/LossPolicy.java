package io.mixtune.data.template;

/** Which tokens carry loss. */
public enum LossPolicy {
    /** Every assistant turn's content and closing EOS (the default). */
    ALL_ASSISTANT_TURNS,
    /** Only the last assistant turn that survives truncation. */
    LAST_TURN,
    /** Every token, prompts included (train_on_inputs). */
    TRAIN_ON_INPUTS
}
