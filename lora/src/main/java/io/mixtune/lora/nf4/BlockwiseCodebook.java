package io.mixtune.lora.nf4;

import java.util.stream.IntStream;

/**
 * Blockwise absmax quantization onto a sorted codebook, as bitsandbytes' reference backend does it: per block of
 * {@code blockSize} values, absmax = max |x|; x is scaled into [-1, 1] and replaced by the index of the nearest code
 * value, where a value exactly halfway between two codes takes the lower one ({@code torch.bucketize}, right=False).
 *
 * <p>The float operations follow bitsandbytes exactly so the bytes are identical: full blocks are multiplied by the
 * float32 reciprocal of their absmax, the last partial block is divided by its absmax, and absmax is clamped to at
 * least 1e-38 so an all-zero block maps to the code nearest 0.
 */
final class BlockwiseCodebook {
    private static final float MIN_ABSMAX = 1e-38f;

    private final float[] code;
    private final float[] bounds;
    private final int blockSize;
    private final int firstStep;

    /** @param code sorted ascending, as bitsandbytes requires of every codebook */
    BlockwiseCodebook(float[] code, int blockSize) {
        for (int i = 1; i < code.length; i++) {
            if (!(code[i - 1] < code[i])) {
                throw new IllegalArgumentException("a codebook must be sorted ascending, got " + code[i - 1] + " before "
                        + code[i]);
            }
        }
        this.code = code.clone();
        this.bounds = new float[code.length - 1];
        for (int i = 0; i < bounds.length; i++) {
            bounds[i] = (code[i] + code[i + 1]) / 2f;
        }
        this.blockSize = blockSize;
        if (Integer.bitCount(code.length) != 1) {
            throw new IllegalArgumentException("a codebook has a power-of-two number of values, got " + code.length);
        }
        this.firstStep = code.length / 2;
    }

    int blockSize() {
        return blockSize;
    }

    float code(int index) {
        return code[index];
    }

    int blocks(long count) {
        return Math.toIntExact((count + blockSize - 1) / blockSize);
    }

    /**
     * Quantizes values[0, count) into {@code codes} (one code index per value, unsigned) and returns the absmax of
     * each block. Blocks are independent, so they are quantized in parallel.
     */
    float[] quantize(float[] values, int count, byte[] codes) {
        int blocks = blocks(count);
        float[] absmax = new float[blocks];
        int fullBlocks = count / blockSize;
        IntStream.range(0, blocks).parallel().forEach(b -> {
            int start = b * blockSize;
            int end = Math.min(count, start + blockSize);
            float max = 0f;
            for (int i = start; i < end; i++) {
                max = Math.max(max, Math.abs(values[i]));
            }
            float clamped = Math.max(max, MIN_ABSMAX);
            // bitsandbytes keeps the clamped absmax for the last partial block only, and the raw one for full blocks.
            absmax[b] = b < fullBlocks ? max : clamped;
            if (b < fullBlocks) {
                float reciprocal = 1f / clamped;
                for (int i = start; i < end; i++) {
                    codes[i] = (byte) nearest(clamp(values[i] * reciprocal));
                }
            } else {
                for (int i = start; i < end; i++) {
                    codes[i] = (byte) nearest(clamp(values[i] / clamped));
                }
            }
        });
        return absmax;
    }

    /**
     * Index of the code nearest to x: the number of bounds strictly below x. Codebooks have 2^k values, so 2^k - 1
     * bounds, and a search with fixed steps 2^(k-1), ..., 1 needs no data-dependent branch (a mispredicted branch per
     * step made the plain binary search the cost of quantizing).
     */
    int nearest(float x) {
        int index = 0;
        for (int step = firstStep; step > 0; step >>= 1) {
            index += bounds[index + step - 1] < x ? step : 0;
        }
        return index;
    }

    private static float clamp(float x) {
        return Math.max(-1f, Math.min(1f, x));
    }
}
