package io.mixtune.lora.nf4;

/**
 * The sum of float32 values in the order PyTorch's CPU kernel adds them, so that a mean taken here has the bits of
 * {@code torch.mean}: QLoRA's double quantization subtracts the mean of the absmax values, and a one-ulp difference
 * there changes the stored scales of every block.
 *
 * <p>PyTorch sums with 4 rows of 8-lane accumulators (AVX2 width; its AVX-512 build uses the same kernel) in a
 * cascade of 4 levels: each level absorbs 2^k chunks of the level below, which bounds rounding error without
 * sorting. Leftover lanes and elements are added in a fixed order afterwards. Above 32768 values torch splits the sum
 * across threads, so its bits then depend on the thread count; this class follows the single-threaded order, which
 * torch also takes below that size whatever the thread count.
 */
final class TorchFloatSum {
    private static final int LANES = 8;
    private static final int ROWS = 4;
    private static final int LEVELS = 4;

    private TorchFloatSum() {}

    static float mean(float[] values) {
        return sum(values, 0, values.length) / (float) values.length;
    }

    static float sum(float[] x, int from, int to) {
        int n = to - from;
        if (n < LANES) {
            // Scalar path: 4 single-lane rows over groups of 4, then the leftovers, then the other rows.
            float[][] rows = cascade(x, from, n / ROWS, 1);
            float total = rows[0][0];
            for (int i = (n / ROWS) * ROWS; i < n; i++) {
                total += x[from + i];
            }
            for (int row = 1; row < ROWS; row++) {
                total += rows[row][0];
            }
            return total;
        }
        int vectors = n / LANES;
        float[][] rows = cascade(x, from, vectors / ROWS, LANES);
        for (int v = (vectors / ROWS) * ROWS; v < vectors; v++) {
            for (int lane = 0; lane < LANES; lane++) {
                rows[0][lane] += x[from + v * LANES + lane];
            }
        }
        for (int row = 1; row < ROWS; row++) {
            for (int lane = 0; lane < LANES; lane++) {
                rows[0][lane] += rows[row][lane];
            }
        }
        float total = 0f;
        for (int i = vectors * LANES; i < n; i++) {
            total += x[from + i];
        }
        for (int lane = 0; lane < LANES; lane++) {
            total += rows[0][lane];
        }
        return total;
    }

    /** torch's multi_row_sum: {@code chunks} chunks of ROWS x lanes values through a 4-level cascade of accumulators. */
    private static float[][] cascade(float[] x, int from, int chunks, int lanes) {
        int levelPower = Math.max(4, ceilLog2(chunks) / LEVELS);
        int levelStep = 1 << levelPower;
        int levelMask = levelStep - 1;
        float[][][] accumulators = new float[LEVELS][ROWS][lanes];
        int i = 0;
        while (i + levelStep <= chunks) {
            for (int j = 0; j < levelStep; j++, i++) {
                addChunk(accumulators[0], x, from + i * ROWS * lanes, lanes);
            }
            for (int level = 1; level < LEVELS; level++) {
                for (int row = 0; row < ROWS; row++) {
                    for (int lane = 0; lane < lanes; lane++) {
                        accumulators[level][row][lane] += accumulators[level - 1][row][lane];
                        accumulators[level - 1][row][lane] = 0f;
                    }
                }
                if ((i & (levelMask << (level * levelPower))) != 0) {
                    break;
                }
            }
        }
        for (; i < chunks; i++) {
            addChunk(accumulators[0], x, from + i * ROWS * lanes, lanes);
        }
        for (int level = 1; level < LEVELS; level++) {
            for (int row = 0; row < ROWS; row++) {
                for (int lane = 0; lane < lanes; lane++) {
                    accumulators[0][row][lane] += accumulators[level][row][lane];
                }
            }
        }
        return accumulators[0];
    }

    private static void addChunk(float[][] rows, float[] x, int base, int lanes) {
        for (int row = 0; row < ROWS; row++) {
            for (int lane = 0; lane < lanes; lane++) {
                rows[row][lane] += x[base + row * lanes + lane];
            }
        }
    }

    private static int ceilLog2(long value) {
        return value <= 1 ? 0 : 64 - Long.numberOfLeadingZeros(value - 1);
    }
}
