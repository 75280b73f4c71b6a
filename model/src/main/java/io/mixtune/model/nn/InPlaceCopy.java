package io.mixtune.model.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;

/**
 * Values written into an existing float32 array in place, as {@code with torch.no_grad(): t.copy_(v)} writes them: the
 * array keeps its identity, requires_grad flag and device, so adapters, optimizer moments and reference weights can be
 * restored without rebuilding what holds them.
 *
 * <p>Not DJL's {@code NDArray.set(float[])}: its JNI ({@code torchSet}) enters libtorch's deprecated
 * {@code AutoNonVariableTypeMode} guard, whose first use prints "AutoNonVariableTypeMode is deprecated" straight to the
 * process's stderr (a TORCH_WARN_ONCE), where no Java setting reaches it; TORCH_CPP_LOG_LEVEL does not either, since
 * only Python's torch calls the c10::initLogging that reads it. An index_put_ of the whole array with grad mode off
 * writes the same bytes through no deprecated guard.
 */
public final class InPlaceCopy {
    private InPlaceCopy() {}

    public static void copy(NDArray target, float[] values) {
        if (target.getDataType() != DataType.FLOAT32 || values.length != target.size()) {
            throw new IllegalArgumentException("cannot copy " + values.length + " floats into a " + target.getDataType()
                    + " array of shape " + target.getShape());
        }
        try (NDArray source = target.getManager().create(values, target.getShape())) {
            copy(target, source);
        }
    }

    /** {@code source}'s values written into {@code target}, on target's device (no host copy when both share it). */
    public static void copy(NDArray target, NDArray source) {
        WithoutGrad.get(() -> {
            target.set(new NDIndex("..."), source);
            return target;
        });
    }
}
