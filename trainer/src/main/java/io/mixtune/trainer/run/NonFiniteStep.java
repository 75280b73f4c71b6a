package io.mixtune.trainer.run;

import ai.djl.ndarray.NDArray;
import io.mixtune.lora.adapter.LoraModel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/** The error that stops a run whose loss or gradient norm came out NaN or infinite (on CPU there is no loss scale). */
public final class NonFiniteStep {
    private NonFiniteStep() {}

    /** Names the step, the adapter arrays whose gradient is not finite and the checkpoint that is left intact. */
    public static IllegalStateException error(long step, double loss, double gradNorm, LoraModel lora,
            String adapterName, Path checkpoints) {
        List<Path> saved = TrainingCheckpoint.list(checkpoints);
        return new IllegalStateException(String.format(Locale.ROOT, "step %d: the loss is %s (grad norm %s%s)"
                + ": stopping; %s. Lower train.lr or raise warmup_steps.", step, loss, gradNorm,
                nonFiniteGradients(lora, adapterName),
                saved.isEmpty() ? "no checkpoint was saved yet"
                        : "the last checkpoint " + saved.get(saved.size() - 1) + " is intact"));
    }

    /** ", not finite in: ..." naming the adapter arrays whose gradient holds a NaN or infinity. */
    private static String nonFiniteGradients(LoraModel lora, String adapterName) {
        List<NDArray> parameters = lora.parameters(adapterName);
        List<String> names = lora.parameterNames(adapterName);
        List<String> bad = new ArrayList<>();
        for (int i = 0; i < parameters.size(); i++) {
            float sum;
            try (NDArray gradient = parameters.get(i).getGradient(); NDArray abs = gradient.abs();
                    NDArray total = abs.sum()) {
                sum = total.getFloat();
            }
            if (!Float.isFinite(sum)) {
                bad.add(names.get(i));
            }
        }
        return bad.isEmpty() ? "" : ", not finite in " + (bad.size() > 4 ? bad.subList(0, 4) + " and " + (bad.size() - 4)
                + " more" : bad);
    }
}
