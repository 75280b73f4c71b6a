package io.mixtune.model.nn;

import ai.djl.pytorch.jni.JniUtils;
import java.util.function.Supplier;

/**
 * Array arithmetic with autograd off, as under {@code torch.no_grad()}: for writes into arrays that training reads
 * ({@link InPlaceCopy}) and for arithmetic over trained parameters that must not join the training graph (the weight
 * averages, as torch's AveragedModel updates them: an in-place add of a parameter into an average would otherwise make
 * the average a node of the graph).
 */
public final class WithoutGrad {
    private WithoutGrad() {}

    public static <T> T get(Supplier<T> arithmetic) {
        boolean gradMode = JniUtils.isGradMode();
        JniUtils.setGradMode(false);
        try {
            return arithmetic.get();
        } finally {
            JniUtils.setGradMode(gradMode);
        }
    }
}
