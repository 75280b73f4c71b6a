package io.mixtune.trainer.cli;

import io.mixtune.lora.nf4.Nf4Loading;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import java.util.Locale;

/** The --quantize option shared by the commands that load a model. */
final class ModelLoading {
    private ModelLoading() {}

    static MistralCheckpoint.LinearFactory linearFactory(String quantize) {
        if (quantize == null) {
            return MistralCheckpoint.DENSE;
        }
        return switch (quantize.toLowerCase(Locale.ROOT)) {
            case "none" -> MistralCheckpoint.DENSE;
            case "nf4" -> Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION);
            default -> throw new UsageException("--quantize expects nf4 or none, got '" + quantize + "'");
        };
    }
}
