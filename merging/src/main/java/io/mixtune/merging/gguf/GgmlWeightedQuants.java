package io.mixtune.merging.gguf;

import io.mixtune.model.safetensors.Float16;
import java.nio.ByteBuffer;

/**
 * The blocks llama-quantize writes with an importance matrix, and the IQ4_NL / IQ4_XS blocks with or without one, bit
 * for bit: ggml/src/ggml-quants.c's quantize_q4_0 ... quantize_q6_K when quant_weights != NULL
 * (quantize_row_q4_0_impl, quantize_row_q2_K_impl ... quantize_row_q6_K_impl, which search scales by make_qx_quants,
 * make_qkx3_quants and make_qp_quants weighted by the imatrix) and quantize_iq4_nl / quantize_iq4_xs
 * (quantize_row_iq4_nl_impl, ntry 7, weights x^2 without an imatrix). Every step in float32 in the C code's order, as
 * {@link GgmlKQuants}. Q4_0, Q4_1, Q5_0 and Q5_1 weight a value by its importance times sqrt(sigma2 + x^2), sigma2
 * the mean square of the whole row, so these encoders see whole rows of a tensor (or of one expert of a 3-D one);
 * the k-quants and IQ4 take sigma2 per 256-value super-block. Tested on libggml-base's own bytes
 * (GgmlWeightedQuantsTest, gguf/kquants-imatrix.json).
 */
final class GgmlWeightedQuants {
    private static final int QK_K = GgmlKQuants.QK_K;
    private static final float GROUP_MAX_EPS = 1e-15f;
    /** kvalues_iq4nl (ggml-common.h): IQ4's sixteen non-linear levels. */
    private static final int[] IQ4_VALUES = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89,
            113};

    private GgmlWeightedQuants() {}

    /**
     * Where a run of values lies in its tensor, for the importance of each column and the rows around a block.
     *
     * @param partOffset the position in the tensor of {@code part[0]}, which starts a row
     * @param columns a row's values (ggml's ne0)
     * @param matrixValues the values of one matrix (ne0 * ne1): the imatrix holds {@code columns} weights per matrix
     *     (per expert of a 3-D tensor)
     * @param importance ne0 * ne2 weights, or null (IQ4 without an imatrix)
     */
    record Layout(long partOffset, int columns, long matrixValues, float[] importance) {}

    /** Appends {@code count} values of {@code part} from {@code from} (whole blocks of one or more rows) as type. */
    static void encode(float[] part, int from, int count, GgmlType type, ByteBuffer out, Layout layout) {
        int rowStartSeen = -1;
        float rowSigma2 = 0;
        for (int block = from; block < from + count; block += type.blockSize()) {
            long position = layout.partOffset() + block;
            int column = (int) (position % layout.columns());
            int rowStart = block - column;
            if (rowStart < 0 || rowStart + layout.columns() > part.length) {
                throw new IllegalStateException("values from " + position + " do not lie in whole rows of the part");
            }
            float[] qw = layout.importance();
            int qwAt = (int) (position / layout.matrixValues() * layout.columns() + column);
            if (qw == null && type != GgmlType.IQ4_NL && type != GgmlType.IQ4_XS) {
                throw new IllegalStateException(type + " without an importance matrix is GgmlKQuants'");
            }
            if ((type == GgmlType.Q4_0 || type == GgmlType.Q4_1 || type == GgmlType.Q5_0 || type == GgmlType.Q5_1)
                    && rowStart != rowStartSeen) {
                float sumX2 = 0;
                for (int j = rowStart; j < rowStart + layout.columns(); j++) {
                    sumX2 += part[j] * part[j];
                }
                rowSigma2 = sumX2 / layout.columns();
                rowStartSeen = rowStart;
            }
            switch (type) {
                case Q4_0 -> q4_0Or5_0(part, block, rowSigma2, qw, qwAt, out, 8);
                case Q4_1 -> q4_1Or5_1(part, block, rowSigma2, qw, qwAt, out, 15);
                case Q5_0 -> q4_0Or5_0(part, block, rowSigma2, qw, qwAt, out, 16);
                case Q5_1 -> q4_1Or5_1(part, block, rowSigma2, qw, qwAt, out, 31);
                case Q2_K -> q2_K(part, block, qw, qwAt, out);
                case Q3_K -> q3_K(part, block, qw, qwAt, out);
                case Q4_K -> q45_K(part, block, qw, qwAt, out, 15);
                case Q5_K -> q45_K(part, block, qw, qwAt, out, 31);
                case Q6_K -> GgmlKQuants.q6_K(part, block, out, qw, qwAt);
                case IQ4_NL -> iq4(part, block, 32, qw, qwAt, out);
                case IQ4_XS -> iq4(part, block, QK_K, qw, qwAt, out);
                default -> throw new IllegalStateException(type + " takes no importance matrix");
            }
        }
    }

    /** The weights qw[i] * sqrt(sigma2 + x^2) of n values, as every *_impl but Q6_K's computes them. */
    private static float[] weights(float[] x, int from, int n, float sigma2, float[] qw, int qwAt) {
        float[] weight = new float[n];
        for (int l = 0; l < n; l++) {
            weight[l] = qw[qwAt + l] * (float) Math.sqrt(sigma2 + x[from + l] * x[from + l]);
        }
        return weight;
    }

    /**
     * quantize_row_q4_0_impl (nmax 8, x = d (q - 8)) and quantize_row_q5_0_impl (nmax 16, the fifth bits in qh):
     * make_qx_quants(32, nmax) weighted.
     */
    private static void q4_0Or5_0(float[] x, int from, float sigma2, float[] qw, int qwAt, ByteBuffer out, int nmax) {
        int[] levels = new int[32];
        float d = GgmlKQuants.makeQxQuants(32, nmax, x, from, levels, 0, weights(x, from, 32, sigma2, qw, qwAt), 0);
        out.putShort(Float16.fromFloat(d));
        putLevels(levels, nmax, out);
    }

    /**
     * quantize_row_q4_1_impl (nmax 15) and quantize_row_q5_1_impl (nmax 31): make_qkx3_quants(32, nmax, -0.9, 0.05,
     * 36) weighted; m = the min.
     */
    private static void q4_1Or5_1(float[] x, int from, float sigma2, float[] qw, int qwAt, ByteBuffer out, int nmax) {
        int[] levels = new int[32];
        float[] theMin = new float[1];
        float d = makeQkx3Quants(32, nmax, x, from, weights(x, from, 32, sigma2, qw, qwAt), levels, 0, theMin);
        out.putShort(Float16.fromFloat(d)).putShort(Float16.fromFloat(-theMin[0]));
        putLevels(levels, nmax, out);
    }

    /** 16 levels (nmax 8, 15) as nibbles, value j low and j + 16 high; for 5 bits (16, 31) the uint32 qh first. */
    private static void putLevels(int[] levels, int nmax, ByteBuffer out) {
        if (nmax < 16) {
            for (int j = 0; j < 16; j++) {
                out.put((byte) (levels[j] | (levels[j + 16] << 4)));
            }
        } else {
            fiveBits(levels, out);
        }
    }

    /** q5_0's and q5_1's qh (uint32, each level's fifth bit) and low nibbles. */
    private static void fiveBits(int[] levels, ByteBuffer out) {
        int qh = 0;
        byte[] qs = new byte[16];
        for (int j = 0; j < 16; j++) {
            int xi0 = levels[j] & 0xFF;
            int xi1 = levels[j + 16] & 0xFF;
            qs[j] = (byte) ((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= ((xi0 & 0x10) >> 4) << j;
            qh |= ((xi1 & 0x10) >> 4) << (j + 16);
        }
        out.putInt(qh).put(qs);
    }

    /** A group's weights summed in order from 0 (the sw[j] the *_K_impl functions weight the scales by). */
    private static float sum(float[] weight) {
        float sum = 0;
        for (float w : weight) {
            sum += w;
        }
        return sum;
    }

    /** The mean square of a super-block times {@code factor} (2 for Q3_K ... Q5_K and IQ4, 1 for Q2_K). */
    private static float sigma2(float[] x, int from, int n, float factor) {
        float sumX2 = 0;
        for (int l = 0; l < n; l++) {
            sumX2 += x[from + l] * x[from + l];
        }
        return factor * sumX2 / n;
    }

    /**
     * quantize_row_q2_K_impl: sixteen groups by make_qkx3_quants(16, 3, -0.9, 0.05, 36), their scales and mins to 4
     * bits by make_qp_quants weighted by each group's summed weights, levels recomputed from the fp16 d and dmin.
     */
    private static void q2_K(float[] x, int from, float[] qw, int qwAt, ByteBuffer out) {
        int[] levels = new int[QK_K];
        float[] mins = new float[16];
        float[] scales = new float[16];
        float[] sw = new float[16];
        float sigma2 = sigma2(x, from, QK_K, 1);
        for (int j = 0; j < 16; j++) {
            float[] weight = weights(x, from + 16 * j, 16, sigma2, qw, qwAt + 16 * j);
            sw[j] = sum(weight);
            float[] theMin = new float[1];
            scales[j] = makeQkx3Quants(16, 3, x, from + 16 * j, weight, levels, 16 * j, theMin);
            mins[j] = theMin[0];
        }
        int[] ls = new int[16];
        int[] lm = new int[16];
        float dm = makeQpQuants(16, 15, scales, ls, sw);
        float mm = makeQpQuants(16, 15, mins, lm, sw);
        short d = Float16.fromFloat(dm);
        short dmin = Float16.fromFloat(mm);
        byte[] packed = new byte[16];
        for (int j = 0; j < 16; j++) {
            packed[j] = (byte) (ls[j] | (lm[j] << 4));
        }
        GgmlKQuants.putQ2K(x, from, levels, packed, d, dmin, out);
    }

    /**
     * quantize_row_q3_K_impl: sixteen groups by make_qx_quants(16, 4) weighted, their scales to 6 bits by
     * make_qx_quants(16, 32) weighted by the groups' summed weights; layout as quantize_row_q3_K_ref's.
     */
    private static void q3_K(float[] x, int from, float[] qw, int qwAt, ByteBuffer out) {
        int[] levels = new int[QK_K];
        float[] scales = new float[16];
        float[] sw = new float[16];
        float sigma2 = sigma2(x, from, QK_K, 2);
        for (int j = 0; j < 16; j++) {
            float[] weight = weights(x, from + 16 * j, 16, sigma2, qw, qwAt + 16 * j);
            sw[j] = sum(weight);
            scales[j] = GgmlKQuants.makeQxQuants(16, 4, x, from + 16 * j, levels, 16 * j, weight, 0);
        }
        int[] ls = new int[16];
        float dBlock = GgmlKQuants.makeQxQuants(16, 32, scales, 0, ls, 0, sw, 0);
        byte[] packed = new byte[12];
        for (int j = 0; j < 16; j++) {
            GgmlKQuants.packQ3Scale(packed, j, ls[j]);
        }
        GgmlKQuants.putQ3K(x, from, levels, packed, Float16.fromFloat(dBlock), out);
    }

    /**
     * quantize_row_q4_K_impl (nmax 15) and quantize_row_q5_K_impl (nmax 31): eight groups by make_qkx3_quants, their
     * scales and mins to 6 bits by make_qp_quants(8, 63) weighted by the groups' summed weights (Q5_K clamps them to
     * 63, Q4_K does not), levels recomputed from the fp16 d and dmin; layouts as the _ref functions'.
     */
    private static void q45_K(float[] x, int from, float[] qw, int qwAt, ByteBuffer out, int nmax) {
        int[] levels = new int[QK_K];
        float[] mins = new float[8];
        float[] scales = new float[8];
        float[] sw = new float[8];
        float sigma2 = sigma2(x, from, QK_K, 2);
        for (int j = 0; j < 8; j++) {
            float[] weight = weights(x, from + 32 * j, 32, sigma2, qw, qwAt + 32 * j);
            sw[j] = sum(weight);
            float[] theMin = new float[1];
            scales[j] = makeQkx3Quants(32, nmax, x, from + 32 * j, weight, levels, 32 * j, theMin);
            mins[j] = theMin[0];
        }
        int[] lsAll = new int[8];
        int[] lmAll = new int[8];
        float dBlock = makeQpQuants(8, 63, scales, lsAll, sw);
        float mBlock = makeQpQuants(8, 63, mins, lmAll, sw);
        byte[] packed = new byte[12];
        for (int j = 0; j < 8; j++) {
            // Q5_K clamps its levels to 63, Q4_K does not
            GgmlKQuants.packScaleMin(packed, j, nmax == 31 ? Math.min(63, lsAll[j]) : lsAll[j],
                    nmax == 31 ? Math.min(63, lmAll[j]) : lmAll[j]);
        }
        short d = Float16.fromFloat(dBlock);
        short dmin = Float16.fromFloat(mBlock);
        GgmlKQuants.requantizeScaleMin(x, from, nmax, packed, Float16.toFloat(d), Float16.toFloat(dmin), levels);
        if (nmax == 15) {
            GgmlKQuants.putQ4K(d, dmin, packed, levels, out);
        } else {
            GgmlKQuants.putQ5K(d, dmin, packed, levels, out);
        }
    }

    /**
     * quantize_row_iq4_nl_impl with ntry 7, as quantize_iq4_nl (super-block 32) and quantize_iq4_xs (256) call it:
     * each 32-value block's scale by a search over kvalues_iq4nl (weights qw sqrt(sigma2 + x^2), or x^2 without an
     * imatrix); IQ4_XS then quantizes the eight scales to 6 bits against d = -max/32 and picks the levels again.
     */
    private static void iq4(float[] x, int from, int superBlock, float[] qw, int qwAt, ByteBuffer out) {
        float sigma2 = 0;
        for (int j = 0; j < superBlock; j++) {
            sigma2 += x[from + j] * x[from + j];
        }
        sigma2 *= 2.f / superBlock;
        int ntry = 7;
        int blocks = superBlock / 32;
        int[] levels = new int[superBlock];
        float[] scales = new float[blocks];
        float maxScale = 0;
        float amaxScale = 0;
        for (int ib = 0; ib < blocks; ib++) {
            int xb = from + ib * 32;
            float[] weight = new float[32];
            for (int j = 0; j < 32; j++) {
                weight[j] = qw != null ? qw[qwAt + ib * 32 + j] * (float) Math.sqrt(sigma2 + x[xb + j] * x[xb + j])
                        : x[xb + j] * x[xb + j];
            }
            float amax = 0;
            float max = 0;
            for (int j = 0; j < 32; j++) {
                float ax = Math.abs(x[xb + j]);
                if (ax > amax) {
                    amax = ax;
                    max = x[xb + j];
                }
            }
            if (amax < GROUP_MAX_EPS) {
                scales[ib] = 0;
                continue;
            }
            float d = -max / IQ4_VALUES[0];
            float id = 1 / d;
            float sumqx = 0;
            float sumq2 = 0;
            for (int j = 0; j < 32; j++) {
                int l = bestIndex(id * x[xb + j]);
                levels[ib * 32 + j] = l;
                float q = IQ4_VALUES[l];
                float w = weight[j];
                sumqx += w * q * x[xb + j];
                sumq2 += w * q * q;
            }
            d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
            float best = d * sumqx;
            for (int itry = -ntry; itry <= ntry; itry++) {
                id = (itry + IQ4_VALUES[0]) / max;
                sumqx = 0;
                sumq2 = 0;
                for (int j = 0; j < 32; j++) {
                    float q = IQ4_VALUES[bestIndex(id * x[xb + j])];
                    float w = weight[j];
                    sumqx += w * q * x[xb + j];
                    sumq2 += w * q * q;
                }
                if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                    d = sumqx / sumq2;
                    best = d * sumqx;
                }
            }
            scales[ib] = d;
            float absD = Math.abs(d);
            if (absD > amaxScale) {
                amaxScale = absD;
                maxScale = d;
            }
        }
        if (blocks > 1) {
            int scalesH = 0;
            byte[] scalesL = new byte[blocks / 2];
            float d = -maxScale / 32;
            short dh = Float16.fromFloat(d);
            float id = d != 0 ? 1 / d : 0.f;
            for (int ib = 0; ib < blocks; ib++) {
                int l = GgmlKQuants.nearestInt(id * scales[ib]);
                l = Math.max(-32, Math.min(31, l));
                float dl = d * l;
                float idl = dl != 0 ? 1 / dl : 0.f;
                for (int j = 0; j < 32; j++) {
                    levels[ib * 32 + j] = bestIndex(idl * x[from + ib * 32 + j]);
                }
                l += 32;
                int low = l & 0xf;
                int high = l >> 4;
                if (ib % 2 == 0) {
                    scalesL[ib / 2] = (byte) low;
                } else {
                    scalesL[ib / 2] |= (byte) (low << 4);
                }
                scalesH |= high << 2 * (ib % 8);
            }
            out.putShort(dh).putShort((short) scalesH).put(scalesL);
        } else {
            out.putShort(Float16.fromFloat(scales[0]));
            float id = scales[0] != 0 ? 1 / scales[0] : 0;
            for (int j = 0; j < superBlock; j++) {
                levels[j] = bestIndex(id * x[from + j]);
            }
        }
        for (int i = 0; i < superBlock / 32; i++) {
            for (int j = 0; j < 16; j++) {
                out.put((byte) (levels[32 * i + j] | (levels[32 * i + 16 + j] << 4)));
            }
        }
    }

    /** best_index_int8 over kvalues_iq4nl: the nearest level (the upper one of a tie), by bisection. */
    private static int bestIndex(float x) {
        if (x <= IQ4_VALUES[0]) {
            return 0;
        }
        if (x >= IQ4_VALUES[15]) {
            return 15;
        }
        int ml = 0;
        int mu = 15;
        while (mu - ml > 1) {
            int mav = (ml + mu) / 2;
            if (x < IQ4_VALUES[mav]) {
                mu = mav;
            } else {
                ml = mav;
            }
        }
        return x - IQ4_VALUES[mu - 1] < IQ4_VALUES[mu] - x ? mu - 1 : mu;
    }

    /**
     * make_qkx3_quants(n, nmax, x, weights, L, the_min, Laux, -0.9, 0.05, 36, false), as every caller here asks: with
     * weights given and nstep 36 it is make_qkx2_quants step for step (its max <= min is max == min, the min being
     * clamped to at most 0 and at most every value), so GgmlKQuants' translation serves.
     */
    private static float makeQkx3Quants(int n, int nmax, float[] x, int from, float[] weights, int[] levels, int at,
            float[] theMin) {
        return GgmlKQuants.makeQkx2Quants(n, nmax, x, from, weights, levels, at, theMin, new int[n], -0.9f, 0.05f, 36,
                false);
    }

    /**
     * make_qp_quants: non-negative levels 0..nmax of n positive values (the groups' scales or mins) weighted by
     * quantWeights; levels are uint8_t in C, so a negative one wraps, kept so here.
     */
    private static float makeQpQuants(int n, int nmax, float[] x, int[] levels, float[] quantWeights) {
        float max = 0;
        for (int i = 0; i < n; i++) {
            max = Math.max(max, x[i]);
        }
        if (max < GROUP_MAX_EPS) {
            for (int i = 0; i < n; i++) {
                levels[i] = 0;
            }
            return 0.f;
        }
        float iscale = nmax / max;
        for (int i = 0; i < n; i++) {
            levels[i] = GgmlKQuants.nearestInt(iscale * x[i]) & 0xFF;
        }
        float scale = 1 / iscale;
        float bestMse = 0;
        for (int i = 0; i < n; i++) {
            float diff = x[i] - scale * levels[i];
            float w = quantWeights[i];
            bestMse += w * diff * diff;
        }
        for (int is = -4; is <= 4; is++) {
            if (is == 0) {
                continue;
            }
            float iscaleIs = (0.1f * is + nmax) / max;
            float scaleIs = 1 / iscaleIs;
            float mse = 0;
            for (int i = 0; i < n; i++) {
                int l = GgmlKQuants.nearestInt(iscaleIs * x[i]);
                l = Math.min(nmax, l);
                float diff = x[i] - scaleIs * l;
                float w = quantWeights[i];
                mse += w * diff * diff;
            }
            if (mse < bestMse) {
                bestMse = mse;
                iscale = iscaleIs;
            }
        }
        float sumlx = 0;
        float suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = GgmlKQuants.nearestInt(iscale * x[i]);
            l = Math.min(nmax, l);
            levels[i] = l & 0xFF;
            float w = quantWeights[i];
            sumlx += w * x[i] * l; // the int level, not its uint8 copy
            suml2 += w * l * l;
        }
        for (int itry = 0; itry < 5; itry++) {
            int changed = 0;
            for (int i = 0; i < n; i++) {
                float w = quantWeights[i];
                float slx = sumlx - w * x[i] * levels[i];
                float sl2 = suml2 - w * levels[i] * levels[i];
                if (slx > 0 && sl2 > 0) {
                    int newL = GgmlKQuants.nearestInt(x[i] * sl2 / slx);
                    newL = Math.min(nmax, newL);
                    if (newL != levels[i]) {
                        slx += w * x[i] * newL;
                        sl2 += w * newL * newL;
                        if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                            levels[i] = newL & 0xFF;
                            sumlx = slx;
                            suml2 = sl2;
                            changed++;
                        }
                    }
                }
            }
            if (changed == 0) {
                break;
            }
        }
        return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
    }
}
