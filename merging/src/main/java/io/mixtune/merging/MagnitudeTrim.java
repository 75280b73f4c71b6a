package io.mixtune.merging;

/**
 * TIES's trim: keep the k = floor(density * n) entries of largest magnitude and zero the rest (mergekit's
 * {@code magnitude} sparsification). Exactly k survive: among entries tied at the threshold magnitude the lower
 * indices win, which is what a stable descending sort by magnitude picks. The threshold is found by a two-pass radix
 * select on the bits of |x| (for non-negative floats their order is the order of their bit patterns), in O(n) with no
 * copy of the tensor: a sort would cost n log n on a 65M-entry embedding.
 */
final class MagnitudeTrim {
    private MagnitudeTrim() {}

    static void keepLargest(float[] delta, double density) {
        if (density >= 1) {
            return;
        }
        int k = (int) Math.floor(density * delta.length);
        if (k == 0) {
            java.util.Arrays.fill(delta, 0f);
            return;
        }
        int threshold = kthLargestMagnitudeBits(delta, k);
        int above = 0;
        for (float x : delta) {
            if (magnitudeBits(x) > threshold) {
                above++;
            }
        }
        int tiesKept = k - above;
        for (int j = 0; j < delta.length; j++) {
            int bits = magnitudeBits(delta[j]);
            if (bits < threshold) {
                delta[j] = 0f;
            } else if (bits == threshold) {
                if (tiesKept > 0) {
                    tiesKept--;
                } else {
                    delta[j] = 0f;
                }
            }
        }
    }

    private static int magnitudeBits(float x) {
        return Float.floatToRawIntBits(x) & 0x7FFFFFFF;
    }

    /** The bit pattern of the k-th largest |x| (k from 1): high 16 bits first, then the low 16 within that bucket. */
    private static int kthLargestMagnitudeBits(float[] values, int k) {
        int[] counts = new int[1 << 16];
        for (float x : values) {
            counts[magnitudeBits(x) >>> 16]++;
        }
        int high = counts.length - 1;
        int remaining = k;
        while (counts[high] < remaining) {
            remaining -= counts[high--];
        }
        java.util.Arrays.fill(counts, 0);
        for (float x : values) {
            int bits = magnitudeBits(x);
            if (bits >>> 16 == high) {
                counts[bits & 0xFFFF]++;
            }
        }
        int low = counts.length - 1;
        while (counts[low] < remaining) {
            remaining -= counts[low--];
        }
        return high << 16 | low;
    }
}
