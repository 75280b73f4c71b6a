package io.mixtune.model.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;

/**
 * Rotary position embedding (Su et al. 2021) in the half-split form of the Hugging Face Llama/Mistral code: the first
 * and second halves of each head are the two coordinates that rotate together, not interleaved pairs.
 */
public final class RotaryEmbedding {
    private final int headDim;
    private final double theta;

    public RotaryEmbedding(int headDim, double theta) {
        this.headDim = headDim;
        this.theta = theta;
    }

    /** cos and sin for each position, [B, 1, T, headDim] each, ready to broadcast over heads. */
    public record Angles(NDArray cos, NDArray sin) {}

    /** @param positionIds [B, T] int64 */
    public Angles anglesAt(NDArray positionIds, DataType computeType) {
        NDManager manager = positionIds.getManager();
        // inv_freq = 1 / theta^(2i/d), computed in float32 exactly as transformers does so angles match bit for bit.
        NDArray exponent = manager.arange(0, headDim, 2, DataType.INT64).toType(DataType.FLOAT32, false).div(headDim);
        NDArray inverseFrequency = manager.ones(exponent.getShape()).div(manager.full(exponent.getShape(), (float) theta).pow(exponent));
        NDArray freqs = positionIds.toType(DataType.FLOAT32, false).expandDims(-1).mul(inverseFrequency);
        NDArray angles = freqs.concat(freqs, -1).expandDims(1);
        NDArray cos = angles.cos();
        NDArray sin = angles.sin();
        if (computeType != DataType.FLOAT32) {
            cos = cos.toType(computeType, false);
            sin = sin.toType(computeType, false);
        }
        return new Angles(cos, sin);
    }

    /** x [B, heads, T, headDim] rotated: x cos + rotate_half(x) sin, where rotate_half(x1, x2) = (-x2, x1). */
    public static NDArray rotate(NDArray x, Angles angles) {
        long half = x.getShape().get(3) / 2;
        NDArray first = x.get(new NDIndex("..., :{}", half));
        NDArray second = x.get(new NDIndex("..., {}:", half));
        NDArray rotatedHalf = NDArrays.concat(new NDList(second.neg(), first), -1);
        return x.mul(angles.cos()).add(rotatedHalf.mul(angles.sin()));
    }
}
