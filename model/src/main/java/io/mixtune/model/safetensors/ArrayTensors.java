package io.mixtune.model.safetensors;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import io.mixtune.model.nn.InPlaceCopy;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Map;

/**
 * Tensors held as NDArrays, handed to {@link SafetensorsWriter} as views of their memory, and read back into them
 * ({@link #readInto}): a float32 array on the CPU is written from libtorch's buffer without a copy on the Java heap,
 * one on a GPU through a host copy made for it alone and freed when the writer asks for the next tensor (or on close).
 * Saving a checkpoint then holds at most one tensor beside the live arrays, as torch.save does with a GPU's tensors
 * (one storage copied to the host at a time), instead of a Java copy of the whole state (gigabytes for a Mixtral
 * adapter with its AdamW moments). A spec whose dtype the array does not have (F16, BF16 of a float32 array) is
 * converted by the writer from {@link #floats}.
 */
public final class ArrayTensors implements SafetensorsWriter.TensorSource, AutoCloseable {
    private final Map<String, NDArray> arrays;
    private NDManager hostCopy;

    /** @param arrays by the spec names the writer will ask for */
    public ArrayTensors(Map<String, NDArray> arrays) {
        this.arrays = arrays;
    }

    @Override
    public ByteBuffer bytes(TensorSpec spec) {
        freeHostCopy();
        NDArray array = array(spec);
        if (spec.dtype() != DType.F32 || array.getDataType() != DataType.FLOAT32
                || ByteOrder.nativeOrder() != ByteOrder.LITTLE_ENDIAN) {
            return null;
        }
        // On the host, in a manager of this tensor's own: a view of a CPU array (DJL makes a contiguous copy of a
        // non-contiguous one, attached to the manager of the array it is asked of: here, not the caller's), or a copy
        // off the GPU. Valid while the array lives; the writer reads it before asking for the next tensor.
        hostCopy = NDManager.newBaseManager(Device.cpu());
        NDArray onHost = array.getDevice().equals(Device.cpu()) ? array.reshape(array.getShape())
                : array.toDevice(Device.cpu(), true);
        onHost.attach(hostCopy);
        return onHost.toByteBuffer(true).order(ByteOrder.LITTLE_ENDIAN);
    }

    @Override
    public float[] floats(TensorSpec spec) {
        return array(spec).toFloatArray();
    }

    /**
     * {@code target}'s values from the file's float32 tensor {@code name} of the same shape: read into a host array of
     * that tensor alone and copied onto target's device, so that restoring a checkpoint, like saving one, holds at
     * most one tensor beside the live arrays.
     */
    public static void readInto(SafetensorsReader reader, String name, NDArray target) {
        TensorInfo info = reader.info(name);
        if (info.dtype() != DType.F32 || !Arrays.equals(info.shape(), target.getShape().getShape())) {
            throw new CheckpointException(info.file(), name, "is " + info.dtype() + " " + Arrays.toString(info.shape())
                    + ", expected F32 " + target.getShape());
        }
        try (NDManager host = NDManager.newBaseManager(Device.cpu())) {
            NDArray values = host.zeros(target.getShape(), DataType.FLOAT32);
            reader.readBytesInto(name, values.toByteBuffer(true).order(ByteOrder.LITTLE_ENDIAN));
            InPlaceCopy.copy(target, values);
        }
    }

    private NDArray array(TensorSpec spec) {
        NDArray array = arrays.get(spec.name());
        if (array == null) {
            throw new IllegalArgumentException("no array for tensor '" + spec.name() + "'");
        }
        return array;
    }

    private void freeHostCopy() {
        if (hostCopy != null) {
            hostCopy.close();
            hostCopy = null;
        }
    }

    @Override
    public void close() {
        freeHostCopy();
    }
}
