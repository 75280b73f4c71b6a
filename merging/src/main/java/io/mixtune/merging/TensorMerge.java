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
}
