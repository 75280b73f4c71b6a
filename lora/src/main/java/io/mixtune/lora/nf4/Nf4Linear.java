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

    private final Nf4Tensor weight;
    private final long outFeatures;
    private final long inFeatures;

    public Nf4Linear(Nf4Tensor weight) {
        long[] shape = weight.shape();
        if (shape.length != 2) {
            throw new IllegalArgumentException("a linear weight is [out, in], got " + java.util.Arrays.toString(shape));
        }
        this.weight = weight;
        this.outFeatures = shape[0];
        this.inFeatures = shape[1];
    }

    public Nf4Tensor weight() {
        return weight;
    }

    /**
     * The dense [out, in] weight in {@code type}, attached to {@code manager} (on its device): dequantized anew at
     * every call, nothing cached, so its memory is the caller's to free by closing it.
     */
    public NDArray dequantizedWeight(NDManager manager, DataType type) {
        int bytes = Math.multiplyExact(weight.count(), Float.BYTES);
        ByteBuffer staging = STAGING.get();
        if (staging.capacity() < bytes) {
            staging = ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder());
            STAGING.set(staging);
        }
        staging.clear();
        staging.asFloatBuffer().put(weight.dequantize());
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
