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
 * (all arithmetic modulo 2^64; modelIndex counts the merged models from 0, the base excluded; the tensor's name is the
 * output's, in slices its name in the slice's first source: SlicePlan). Every tensor of every
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
        drop(delta, j -> density, seed, modelIndex, tensorName);
    }

    /** Keeps entry j where u_j < keepProbability(j), with the u_j above; zeroes the others. */
    static void drop(float[] delta, java.util.function.IntToDoubleFunction keepProbability, long seed, int modelIndex,
            String tensorName) {
        long state = stream(seed, modelIndex, tensorName);
        for (int j = 0; j < delta.length; j++) {
            state += GOLDEN_GAMMA;
            double u = (mix64(state) >>> 11) * 0x1.0p-53;
            if (u >= keepProbability.applyAsDouble(j)) {
                delta[j] = 0f;
            }
        }
    }

    /**
     * DELLA's MagPrune as mergekit's della_magprune draws it: within each row, entry j of magnitude rank r (0 for the
     * smallest, ties to the lower index) is kept with probability density - epsilon + 2 epsilon r / (rowLength - 1),
     * so the larger entries are likelier kept and the mean is density. mergekit draws with torch.bernoulli; the draws
     * here are the u_j above.
     */
    static void dropRanked(float[] delta, int rowLength, double density, double epsilon, long seed, int modelIndex,
            String tensorName) {
        if (density >= 1) {
            return;
        }
        if (density - epsilon <= 0 || density + epsilon >= 1) {
            throw new IllegalArgumentException("density " + density + " and epsilon " + epsilon + " of '" + tensorName
                    + "': density -/+ epsilon must lie in (0, 1), as mergekit requires");
        }
        // Row by row (a row's ranks read its entries before any is zeroed), with u_j drawn as drop() draws it: one
        // row of keep probabilities in memory, not a double per entry of a 58M-entry expert weight.
        double[] keep = new double[rowLength];
        long[] order = new long[rowLength];
        long stream = stream(seed, modelIndex, tensorName);
        for (int row = 0; row < delta.length / rowLength; row++) {
            int start = row * rowLength;
            for (int k = 0; k < rowLength; k++) {
                order[k] = (long) (Float.floatToRawIntBits(delta[start + k]) & 0x7FFFFFFF) << 32 | k;
            }
            java.util.Arrays.sort(order);
            for (int rank = 0; rank < rowLength; rank++) {
                double normalized = rowLength > 1 ? rank / (double) (rowLength - 1) : 0;
                keep[(int) order[rank]] = density - epsilon + normalized * 2 * epsilon;
            }
            for (int k = 0; k < rowLength; k++) {
                int j = start + k;
                double u = (mix64(stream + (j + 1L) * GOLDEN_GAMMA) >>> 11) * 0x1.0p-53;
                if (u >= keep[k]) {
                    delta[j] = 0f;
                }
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
