package io.mixtune.trainer;

import io.mixtune.lora.nf4.Nf4Loading;
import io.mixtune.model.checkpoint.MistralCheckpoint;

/** How a model's linear layers load: as stored, or in 4 bits (NF4) as QLoRA training loads them. */
public enum Quantization {
    NONE,
    NF4;

    public MistralCheckpoint.LinearFactory linears() {
        return this == NF4 ? Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION) : MistralCheckpoint.DENSE;
    }
}
