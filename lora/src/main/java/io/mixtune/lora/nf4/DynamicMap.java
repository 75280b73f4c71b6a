package io.mixtune.lora.nf4;

import java.util.Arrays;

/**
 * bitsandbytes' signed 8-bit dynamic quantization map (Dettmers 2016, "8-Bit Approximations for Parallelism in Deep
 * Learning"), with which QLoRA's double quantization stores the per-block absmax values: 127 positive and 127
 * negative values whose exponent shrinks from 1 to 1e-6 while the fraction keeps fewer bits, plus 0 and 1.
 *
 * <p>Computed as {@code create_dynamic_map(signed=True)} computes it, in float32: for exponent step i in 0..6,
 * linspace(0.1, 1, 2^i + 1), the midpoints of neighbours, times 10^(i - 6). bitsandbytes builds the map on the CPU
 * with torch, whose x86 (AVX2) linspace is fused multiply-adds; so is this one, which makes all 256 values equal to
 * bitsandbytes' own (checked against its goldens).
 */
final class DynamicMap {
    private DynamicMap() {}

    static final float[] SIGNED = create();

    private static float[] create() {
        float[] values = new float[256];
        int n = 0;
        for (int i = 0; i < 7; i++) {
            float[] boundaries = linspace(0.1f, 1f, (1 << i) + 1);
            float scale = (float) Math.pow(10, i - 6);
            for (int j = 0; j + 1 < boundaries.length; j++) {
                float mean = (boundaries[j] + boundaries[j + 1]) / 2f;
                values[n++] = scale * mean;
                values[n++] = -scale * mean;
            }
        }
        values[n++] = 0f;
        values[n++] = 1f;
        if (n != 256) {
            throw new AssertionError("dynamic map has " + n + " values");
        }
        Arrays.sort(values);
        return values;
    }

    /** torch.linspace for float32 on x86: fma(step, i, start) for the first half, fma(-step, steps - 1 - i, end) after. */
    private static float[] linspace(float start, float end, int steps) {
        float step = (end - start) / (steps - 1);
        float[] out = new float[steps];
        int halfway = steps / 2;
        for (int i = 0; i < steps; i++) {
            out[i] = i < halfway ? Math.fma(step, (float) i, start) : Math.fma(-step, (float) (steps - 1 - i), end);
        }
        return out;
    }
}
