package io.mixtune.trainer.cli;

import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.trainer.Quantization;
import java.util.Locale;

/** The --quantize option shared by the commands that load a model. */
final class ModelLoading {
    private ModelLoading() {}

    static MistralCheckpoint.LinearFactory linearFactory(String quantize) {
        return quantization(quantize).linears();
    }

    /** --quantize nf4|none; absent: none. */
    static Quantization quantization(String quantize) {
        if (quantize == null) {
            return Quantization.NONE;
        }
        return switch (quantize.toLowerCase(Locale.ROOT)) {
            case "none" -> Quantization.NONE;
            case "nf4" -> Quantization.NF4;
            default -> throw new UsageException("--quantize expects nf4 or none, got '" + quantize + "'");
        };
    }
}
