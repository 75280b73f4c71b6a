package io.mixtune.merging.averaging;

import ai.djl.pytorch.jni.JniUtils;
import java.util.function.Supplier;

/**
 * The averages' arithmetic with autograd off, as torch's AveragedModel updates under {@code torch.no_grad()}: the
 * weights it reads are trained parameters that require gradients, and an in-place add of one into an average would
 * otherwise make the average a node of the training graph.
 */
final class WithoutGrad {
    private WithoutGrad() {}

    static <T> T get(Supplier<T> arithmetic) {
        boolean gradMode = JniUtils.isGradMode();
        JniUtils.setGradMode(false);
        try {
            return arithmetic.get();
        } finally {
            JniUtils.setGradMode(gradMode);
        }
    }
}
