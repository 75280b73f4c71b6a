package io.mixtune.merging;

import java.nio.charset.StandardCharsets;

/**
 * DARE's random drop (Yu et al. 2024): each entry of a task vector is kept with probability {@code density}. The paper
 * divides the survivors by density; mixtune rescales as mergekit does, to the task vector's L1 norm
 * ({@link TaskArithmetic}).
 *
 * <p>The keep-mask comes from SplitMix64 (Steele et al. 2014, the generator behind java.util.SplittableRandom), written
 * out here so that numpy can reproduce it bit for bit ({@code interop/make_merge_goldens.py}):
 * <pre>
 *   mix64(z) = z ^= z >>> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >>> 27; z *= 0x94D049BB133111EB; z ^ (z >>> 31)
 *   stream   = mix64(mix64(mix64(seed) ^ fnv1a64(UTF-8 bytes of the tensor name)) + modelIndex)
 *   u_j      = (mix64(stream + (j + 1) * 0x9E3779B97F4A7C15) >>> 11) * 2^-53    for element j in row-major order
 *   keep_j   = u_j < density
 * </pre>
 * (all arithmetic modulo 2^64; modelIndex counts the merged models from 0, the base excluded). Every tensor of every
 * model gets its own stream, so a mask does not depend on which shard or in which order a tensor is merged.
 */
final class DareMask {
    private static final long GOLDEN_GAMMA = 0x9E3779B97F4A7C15L;

    private DareMask() {}

    /** Zeroes the dropped entries of {@code delta}. */
    static void drop(float[] delta, double density, long seed, int modelIndex, String tensorName) {
        if (density >= 1) {
            return;
        }
        long state = stream(seed, modelIndex, tensorName);
        for (int j = 0; j < delta.length; j++) {
            state += GOLDEN_GAMMA;
            double u = (mix64(state) >>> 11) * 0x1.0p-53;
            if (u >= density) {
                delta[j] = 0f;
            }
        }
    }

    static long stream(long seed, int modelIndex, String tensorName) {
        return mix64(mix64(mix64(seed) ^ fnv1a64(tensorName)) + modelIndex);
    }

    static long mix64(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    static long fnv1a64(String text) {
        long hash = 0xCBF29CE484222325L;
        for (byte b : text.getBytes(StandardCharsets.UTF_8)) {
            hash ^= b & 0xFF;
            hash *= 0x100000001B3L;
        }
        return hash;
    }
}
