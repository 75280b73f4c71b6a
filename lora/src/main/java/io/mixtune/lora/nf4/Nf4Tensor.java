package io.mixtune.lora.nf4;

import java.util.Arrays;

/**
 * A weight stored as 4-bit NormalFloat (QLoRA, Dettmers et al. 2023), laid out byte for byte as bitsandbytes'
 * {@code quantize_4bit(quant_type="nf4", blocksize=64)} lays it out, so a checkpoint quantized here and one quantized
 * by bitsandbytes are interchangeable.
 *
 * <ul>
 *   <li>Values are flattened row-major and cut into blocks of 64; each block keeps its absmax.</li>
 *   <li>Each value becomes the index of the nearest of the 16 NF4 levels (quantiles of N(0, 1) scaled to [-1, 1])
 *       after dividing by its block's absmax; two indices per byte, the first in the high nibble.</li>
 *   <li>With double quantization the fp32 absmax values themselves are stored in 8 bits: their mean (the offset) is
 *       subtracted and the rest is quantized onto the signed dynamic map in blocks of 256, one fp32 scale per block.
 *       That brings the cost per weight from 4.5 bits to about 4.127 bits.</li>
 * </ul>
 */
public final class Nf4Tensor {
    public static final int BLOCK_SIZE = 64;
    public static final int ABSMAX_BLOCK_SIZE = 256;

    /** bitsandbytes' NF4 levels ({@code get_4bit_type("nf4")}), sorted ascending; index 7 is exactly 0. */
    static final float[] LEVELS = {
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
        -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
        0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
        0.7229568362236023f, 1.0f,
    };

    private static final BlockwiseCodebook NF4 = new BlockwiseCodebook(LEVELS, BLOCK_SIZE);
    private static final BlockwiseCodebook ABSMAX = new BlockwiseCodebook(DynamicMap.SIGNED, ABSMAX_BLOCK_SIZE);

    private final long[] shape;
    private final int count;
    private final byte[] packed;
    /** Per-block absmax in fp32 when not double quantized, else null. */
    private final float[] absmax;
    /** Double quantization: per-block absmax as 8-bit indices into the dynamic map, else null. */
    private final byte[] quantizedAbsmax;
    /** Double quantization: one fp32 scale per 256 absmax values. */
    private final float[] absmaxScales;
    /** Double quantization: the mean subtracted from the absmax values before quantizing them. */
    private final float absmaxOffset;

    private Nf4Tensor(long[] shape, int count, byte[] packed, float[] absmax, byte[] quantizedAbsmax,
            float[] absmaxScales, float absmaxOffset) {
        this.shape = shape.clone();
        this.count = count;
        this.packed = packed;
        this.absmax = absmax;
        this.quantizedAbsmax = quantizedAbsmax;
        this.absmaxScales = absmaxScales;
        this.absmaxOffset = absmaxOffset;
    }

    /**
     * @param values row-major weights, at least product(shape) of them
     * @param doubleQuantize quantize the absmax values too (bitsandbytes' compress_statistics=True, QLoRA's default)
     */
    public static Nf4Tensor quantize(float[] values, long[] shape, boolean doubleQuantize) {
        long product = 1;
        for (long dim : shape) {
            product *= dim;
        }
        if (product > values.length) {
            throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " needs " + product + " values, got "
                    + values.length);
        }
        int count = Math.toIntExact(product);
        byte[] codes = new byte[count + 1];
        float[] absmax = NF4.quantize(values, count, codes);
        if (count % 2 == 1) {
            codes[count] = (byte) NF4.nearest(0f); // bitsandbytes pads an odd count with a scaled zero
        }
        byte[] packed = new byte[(count + 1) / 2];
        for (int i = 0; i < packed.length; i++) {
            packed[i] = (byte) ((codes[2 * i] << 4) | codes[2 * i + 1]);
        }
        if (!doubleQuantize) {
            return new Nf4Tensor(shape, count, packed, absmax, null, null, 0f);
        }
        // The offset is the mean of the absmax values as torch.mean takes it in fp32 (bitsandbytes' choice).
        float offset = TorchFloatSum.mean(absmax);
        float[] centred = new float[absmax.length];
        for (int i = 0; i < absmax.length; i++) {
            centred[i] = absmax[i] - offset;
        }
        byte[] quantizedAbsmax = new byte[absmax.length];
        float[] scales = ABSMAX.quantize(centred, centred.length, quantizedAbsmax);
        return new Nf4Tensor(shape, count, packed, null, quantizedAbsmax, scales, offset);
    }

    public long[] shape() {
        return shape.clone();
    }

    public int count() {
        return count;
    }

    public boolean doubleQuantized() {
        return quantizedAbsmax != null;
    }

    /** The packed codes, two per byte, first value in the high nibble. */
    public byte[] packed() {
        return packed.clone();
    }

    /** The fp32 absmax of each block of 64, dequantized first when stored double-quantized. */
    public float[] blockAbsmax() {
        if (absmax != null) {
            return absmax.clone();
        }
        float[] out = new float[quantizedAbsmax.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = ABSMAX.code(quantizedAbsmax[i] & 0xFF) * absmaxScales[i / ABSMAX_BLOCK_SIZE] + absmaxOffset;
        }
        return out;
    }

    /** Double quantization's stored parts: 8-bit absmax codes, fp32 scale per 256, fp32 offset. */
    public byte[] quantizedAbsmax() {
        return quantizedAbsmax == null ? null : quantizedAbsmax.clone();
    }

    public float[] absmaxScales() {
        return absmaxScales == null ? null : absmaxScales.clone();
    }

    public float absmaxOffset() {
        return absmaxOffset;
    }

    /** The weights back in fp32: level[code] * absmax of the block, as bitsandbytes' dequantize_4bit. */
    public float[] dequantize() {
        float[] out = new float[count];
        dequantizeInto(out);
        return out;
    }

    public void dequantizeInto(float[] out) {
        float[] scales = blockAbsmax();
        for (int i = 0; i < count; i += 2) {
            int both = packed[i >> 1] & 0xFF;
            float scale = scales[i / BLOCK_SIZE];
            out[i] = LEVELS[both >>> 4] * scale;
            if (i + 1 < count) { // an odd index never starts a block of 64, so it shares the block's scale
                out[i + 1] = LEVELS[both & 0x0F] * scale;
            }
        }
    }

    /** Bytes this tensor holds: packed codes plus the absmax storage. */
    public long storageBytes() {
        long bytes = packed.length;
        if (absmax != null) {
            return bytes + 4L * absmax.length;
        }
        return bytes + quantizedAbsmax.length + 4L * absmaxScales.length + 4;
    }
}
