package io.mixtune.model.nn;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Dtype casts that autograd follows. DJL's {@code toType} runs under torch's NoGradGuard (its JNI {@code torchTo}), so
 * the cast array has no grad_fn: in float16 compute a float32 LoRA update cast that way would get no gradient, nor
 * would anything before a norm or a softmax computed in float32. {@code cumprod} takes an output dtype, casts its input
 * to it first, and is differentiated by torch; over a new axis of length 1 it is the identity.
 */
public final class Casts {
    private static final Map<Device, NDArray> NEGATIVE_ZEROS = new ConcurrentHashMap<>();

    private Casts() {}

    /** x in {@code type} (x itself when it already is), with gradients flowing back to x in x's type. */
    public static NDArray to(NDArray x, DataType type) {
        if (x.getDataType() == type) {
            return x;
        }
        if (x.getDataType() == DataType.FLOAT16 && type == DataType.FLOAT32) {
            // Widening: x + (-0.0) in float32 is x exactly, signed zeros included, and promotes the sum to float32;
            // add's backward keeps no tensor, where cumprod's keeps its input and output for the whole backward.
            return x.add(negativeZero(x.getDevice()));
        }
        try (NDArray column = x.expandDims(-1); NDArray cast = column.cumProd(-1, type)) {
            return cast.squeeze(-1); // a view: it keeps cast's memory, so only the arrays' handles close here
        }
    }

    /**
     * A float32 [-0.0] on {@code device}, made once per device and kept for the process: a 1-dim array (a 0-dim one
     * would not promote float16 to float32) must live on x's device, and making it at each cast on a GPU would be an
     * upload that waits for the device's queue to drain.
     */
    private static NDArray negativeZero(Device device) {
        return NEGATIVE_ZEROS.computeIfAbsent(device, on -> {
            try (NDManager manager = HostConstants.MANAGER.newSubManager(on);
                    NDArray javaBacked = manager.create(new float[] {-0.0f}, new Shape(1))) {
                NDArray owned = javaBacked.duplicate(); // libtorch's memory, not Java's buffer
                owned.attach(HostConstants.MANAGER);
                return owned;
            }
        });
    }

    /** Softmax along {@code axis} computed in float32, as transformers does for attention and routing, in x's type. */
    public static NDArray softmaxInFloat32(NDArray x, int axis) {
        if (x.getDataType() == DataType.FLOAT32) {
            return x.softmax(axis);
        }
        // The float32 copies go as soon as the result exists: autograd keeps the softmax's output, nothing else.
        try (NDArray x32 = to(x, DataType.FLOAT32); NDArray probabilities = x32.softmax(axis)) {
            return to(probabilities, x.getDataType());
        }
    }
}
