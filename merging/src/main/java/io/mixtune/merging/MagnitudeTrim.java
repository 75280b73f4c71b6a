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

    /**
     * Model Breadcrumbs' trim as mergekit's magnitude_outliers cuts it: of n entries in ascending magnitude (ties to
     * the lower index first, a stable sort), drop the int(gamma n) largest and the n - int(density n) - int(gamma n)
     * smallest (fewer large ones when the two overlap). Where int(gamma n) is 0 mergekit's slice {@code [n_bot:-0]} keeps
     * nothing; here it keeps the int(density n) largest, which is what the formula says.
     */
    static void keepMiddle(float[] delta, double density, double gamma) {
        if (density >= 1) {
            return;
        }
        int n = delta.length;
        int top = (int) (gamma * n);
        int bottom = n - (int) (density * n) - top;
        if (bottom < 0) {
            top += bottom;
            bottom = 0;
        }
        // the top cut: entries above the top-th largest magnitude, and the highest indices among those equal to it
        int topBits = top == 0 ? Integer.MAX_VALUE : kthLargestMagnitudeBits(delta, top);
        int topAbove = 0;
        // the bottom cut: entries below the bottom-th smallest, and the lowest indices among those equal to it
        int bottomBits = bottom == 0 ? -1 : kthLargestMagnitudeBits(delta, n - bottom + 1);
        int bottomBelow = 0;
        for (float x : delta) {
            int bits = magnitudeBits(x);
            topAbove += top > 0 && bits > topBits ? 1 : 0;
            bottomBelow += bottom > 0 && bits < bottomBits ? 1 : 0;
        }
        int bottomTies = bottom - bottomBelow;
        int topTies = top - topAbove;
        for (int j = 0; j < n; j++) {
            int bits = magnitudeBits(delta[j]);
            if (bottom > 0 && bits == bottomBits && bottomTies > 0) {
                bottomTies--;
                delta[j] = 0f;
            } else if (bottom > 0 && bits < bottomBits) {
                delta[j] = 0f;
            }
        }
        for (int j = n - 1; j >= 0; j--) {
            int bits = magnitudeBits(delta[j]);
            if (top > 0 && bits == topBits && topTies > 0 && delta[j] != 0f) {
                topTies--;
                delta[j] = 0f;
            } else if (top > 0 && bits > topBits) {
                delta[j] = 0f;
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
