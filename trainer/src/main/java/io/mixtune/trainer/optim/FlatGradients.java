package io.mixtune.trainer.optim;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import java.util.List;

/**
 * The parameters' gradients copied into one contiguous float32 array, parameter after parameter, each flattened in
 * its own row-major order, so that unscaling, clipping and AdamW run each elementwise operation once over all of them
 * instead of once per array: a Mixtral adapter has hundreds of arrays, and each libtorch call costs microseconds of
 * dispatch (DJL adds a scalar array per scalar argument). Elementwise float operations give the same bits whatever
 * the grouping of the elements, so the results are those of the per-array operations.
 */
public final class FlatGradients {
    private FlatGradients() {}

    /** The gradients of {@code parameters} side by side in a new 1-D array (in the first parameter's manager). */
    public static NDArray of(List<NDArray> parameters) {
        PtNDArray[] flattened = new PtNDArray[parameters.size()];
        try {
            for (int i = 0; i < flattened.length; i++) {
                try (NDArray gradient = parameters.get(i).getGradient()) {
                    flattened[i] = (PtNDArray) gradient.reshape(-1);
                }
            }
            return JniUtils.cat(flattened, 0);
        } finally {
            for (PtNDArray run : flattened) {
                if (run != null) {
                    run.close();
                }
            }
        }
    }

    /** The number of elements of each parameter, in order: the lengths of their runs in a flat array. */
    public static long[] sizes(List<NDArray> parameters) {
        return parameters.stream().mapToLong(p -> p.getShape().size()).toArray();
    }

    /**
     * Views of {@code flat}'s consecutive runs of {@code sizes} elements (one libtorch call), each 1-D; they share
     * {@code flat}'s memory and are closed by the caller.
     */
    public static NDList runs(NDArray flat, long[] sizes) {
        return JniUtils.split((PtNDArray) flat, sizes, 0);
    }

    /** Views of {@code flat}'s runs shaped as {@code shapes}: writing them writes {@code flat}. */
    public static List<NDArray> views(NDArray flat, List<Shape> shapes) {
        long[] sizes = shapes.stream().mapToLong(Shape::size).toArray();
        NDList runs = runs(flat, sizes);
        try {
            return java.util.stream.IntStream.range(0, shapes.size())
                    .mapToObj(i -> runs.get(i).reshape(shapes.get(i))).toList();
        } finally {
            runs.close();
        }
    }
}
