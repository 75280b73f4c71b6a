package io.mixtune.lora.nf4;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import io.mixtune.model.nn.Linear;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * A frozen linear layer whose weight is stored in NF4. Each forward dequantizes the weight into the compute dtype,
 * uses it and frees it with the caller's arrays, so no dequantized copy of the model ever exists; the weight takes no
 * gradient (QLoRA trains only the adapters on top).
 */
public final class Nf4Linear implements Linear {
    /**
     * Where each thread stages a dequantized weight on its way into libtorch. DJL's create(float[]) would copy it into
     * a fresh direct buffer that the CPU tensor keeps pointing at and that only the garbage collector frees, so every
     * forward would leave a weight-sized buffer behind until the next GC (up to the heap's size of them). Staged here,
     * the weight is copied once more into memory libtorch owns, freed the moment its arrays close.
     */
    private static final ThreadLocal<ByteBuffer> STAGING =
            ThreadLocal.withInitial(() -> ByteBuffer.allocateDirect(0).order(ByteOrder.nativeOrder()));

    /** The codes on the Java heap, dequantized in Java (null when held in libtorch). */
    private final Nf4Tensor heapWeight;
    /** The codes in libtorch on the model's device, dequantized there (null when held on the heap). */
    private final Nf4DeviceTensor deviceWeight;
    private final long outFeatures;
    private final long inFeatures;

    public Nf4Linear(Nf4Tensor weight) {
        this(weight, null, weight.shape());
    }

    public Nf4Linear(Nf4DeviceTensor weight) {
        this(null, weight, weight.shape());
    }

    private Nf4Linear(Nf4Tensor heapWeight, Nf4DeviceTensor deviceWeight, long[] shape) {
        if (shape.length != 2) {
            throw new IllegalArgumentException("a linear weight is [out, in], got " + java.util.Arrays.toString(shape));
        }
        this.heapWeight = heapWeight;
        this.deviceWeight = deviceWeight;
        this.outFeatures = shape[0];
        this.inFeatures = shape[1];
    }

    /** Quantized parameters. */
    public int count() {
        return heapWeight != null ? heapWeight.count() : deviceWeight.count();
    }

    /** Bytes the quantized weight takes: packed codes plus the absmax storage. */
    public long storageBytes() {
        return heapWeight != null ? heapWeight.storageBytes() : deviceWeight.storageBytes();
    }

    /**
     * The dense [out, in] weight in {@code type}, attached to {@code manager} (on its device): dequantized anew at
     * every call, nothing cached, so its memory is the caller's to free by closing it.
     */
    public NDArray dequantizedWeight(NDManager manager, DataType type) {
        if (deviceWeight != null) {
            return deviceWeight.dequantize(manager, type);
        }
        int bytes = Math.multiplyExact(heapWeight.count(), Float.BYTES);
        ByteBuffer staging = STAGING.get();
        if (staging.capacity() < bytes) {
            staging = ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder());
            STAGING.set(staging);
        }
        staging.clear();
        staging.asFloatBuffer().put(heapWeight.dequantize());
        try (NDArray staged = manager.create(staging.slice(0, bytes), new Shape(outFeatures, inFeatures),
                DataType.FLOAT32)) {
            return type == DataType.FLOAT32 ? staged.duplicate() : staged.toType(type, false);
        }
    }

    /**
     * x W^T. The dense W is closed at once: autograd keeps its own reference where the gradient of x needs it, and
     * under {@link RecomputedWeights} nothing keeps it (the backward dequantizes it again, as bitsandbytes'
     * MatMul4Bit).
     */
    @Override
    public NDArray forward(NDArray x) {
        RecomputedWeights recording = RecomputedWeights.active();
        if (recording != null) {
            return recording.cut(this, x);
        }
        try (NDArray dense = dequantizedWeight(x.getManager(), x.getDataType())) {
            return ai.djl.nn.core.Linear.linear(x, dense).singletonOrThrow();
        }
    }

    @Override
    public long inFeatures() {
        return inFeatures;
    }

    @Override
    public long outFeatures() {
        return outFeatures;
    }
}
