package io.mixtune.merging;

import java.util.Arrays;
import java.util.function.IntToDoubleFunction;

/**
 * The k-th smallest of a tensor's worth of doubles that a merge computes per entry (arcee_fusion's importance, sce's
 * variance), without storing them: a radix select over the 64 bits in four 16-bit passes, each recomputing the values.
 * The order is {@link Arrays#sort(double[])}'s (Double.compare: -0.0 before 0.0), so the result is the value a sort
 * of a copy would put at index k, at the cost of a 256 KiB histogram instead of two tensor-sized double arrays.
 */
final class OrderStatistic {
    private OrderStatistic() {}

    /**
     * @param value entry j's value, for j in [0, length); never NaN (the inputs are finite)
     * @param k 0-based rank in ascending order
     */
    static double kthSmallest(IntToDoubleFunction value, int length, int k) {
        int[] counts = new int[1 << 16];
        long prefix = 0;
        long mask = 0;
        int rank = k;
        for (int shift = 48; shift >= 0; shift -= 16) {
            Arrays.fill(counts, 0);
            for (int j = 0; j < length; j++) {
                long key = sortable(value.applyAsDouble(j));
                if ((key & mask) == prefix) {
                    counts[(int) (key >>> shift) & 0xFFFF]++;
                }
            }
            int digit = 0;
            while (rank >= counts[digit]) {
                rank -= counts[digit++];
            }
            prefix |= (long) digit << shift;
            mask |= 0xFFFFL << shift;
        }
        return Double.longBitsToDouble(prefix < 0 ? prefix ^ Long.MIN_VALUE : ~prefix);
    }

    /** x's bits turned so that their unsigned order is Double.compare's: the sign flipped, or every bit if negative. */
    private static long sortable(double x) {
        long bits = Double.doubleToRawLongBits(x);
        return bits ^ (bits >> 63 | Long.MIN_VALUE);
    }
}
