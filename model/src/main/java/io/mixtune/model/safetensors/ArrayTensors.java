package io.mixtune.model.safetensors;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Map;

/**
 * Tensors held as NDArrays, handed to {@link SafetensorsWriter} as views of their memory: a float32 array on the CPU
 * is written from libtorch's buffer without a copy on the Java heap, one on a GPU through a host copy made for it
 * alone and freed when the writer asks for the next tensor (or on close). Saving a checkpoint then holds at most one
 * tensor beside the live arrays, as torch.save and safetensors' save_file do, instead of a Java copy of the whole state
 * (gigabytes for a Mixtral adapter with its AdamW moments). A spec whose dtype the array does not have (F16, BF16 of
 * a float32 array) is converted by the writer from {@link #floats}.
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
        if (!array.getDevice().equals(Device.cpu())) {
            hostCopy = NDManager.newBaseManager(Device.cpu());
            array = array.toDevice(Device.cpu(), true);
            array.attach(hostCopy);
        }
        // A view of the array's memory, valid while the array lives; the writer reads it before asking for more.
        return array.toByteBuffer(true).order(ByteOrder.LITTLE_ENDIAN);
    }

    @Override
    public float[] floats(TensorSpec spec) {
        return array(spec).toFloatArray();
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
