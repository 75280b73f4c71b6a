package io.mixtune.merging;

import java.util.List;

/**
 * One output tensor from the same-named tensor of every input, in float32, computed element by element in double.
 * Inputs arrive as freshly read arrays that the merge may overwrite, so a merge needs no tensor-sized scratch beyond
 * its inputs: memory stays at one tensor per input however large the model.
 */
interface TensorMerge {
    /**
     * @param name the tensor's name (DARE seeds its drop mask with it)
     * @param base the base model's tensor, or null for methods without one
     * @param models the models' tensors in input order, all of one length
     * @return the merged tensor (it may be one of the inputs, overwritten)
     */
    float[] merge(String name, float[] base, List<float[]> models);

    /**
     * The same with the tensor's shape, which the methods that work row by row read (della's magnitude ranks,
     * model_stock's filter_wise: a row is the last dimension, a 1-d tensor one row); the others ignore it.
     */
    default float[] merge(String name, long[] shape, float[] base, List<float[]> models) {
        return merge(name, base, models);
    }

    /** Each model becomes its task vector in place, model - base in float32 (as mergekit subtracts). */
    static void subtractBase(List<float[]> models, float[] base) {
        for (float[] model : models) {
            for (int j = 0; j < model.length; j++) {
                model[j] -= base[j];
            }
        }
    }

    /** The length of a row of a tensor of this shape: its last dimension, or all of a 1-d tensor. */
    static int rowLength(long[] shape, int length) {
        return shape.length >= 2 ? (int) shape[shape.length - 1] : length;
    }
}
