package io.mixtune.merging.gguf;

import io.mixtune.model.safetensors.Float16;
import java.nio.ByteBuffer;

/**
 * The blocks llama.cpp's llama-quantize writes without an importance matrix, bit for bit: ggml's reference quantizers
 * in ggml/src/ggml-quants.c (quantize_row_q4_1_ref, quantize_row_q5_0_ref, quantize_row_q5_1_ref,
 * quantize_row_q2_K_ref ... quantize_row_q6_K_ref, which quantize_q*_K, quantize_q4_1 and quantize_q5_{0,1} call
 * when no imatrix is given). Every step is float32 in the C code's order (ggml is built without -ffast-math, and on
 * x86-64 without FMA contraction), rounding by nearest_int's magic-number add (ties to even), fp16 by
 * round-to-nearest-even ({@link Float16}). Tested on libggml-base's own bytes (GgmlKQuantsTest, gguf/kquants.json).
 */
final class GgmlKQuants {
    /** QK_K: values of a k-quant super-block. */
    static final int QK_K = 256;
    /** GROUP_MAX_EPS: below this a group's largest magnitude counts as all zero. */
    private static final float GROUP_MAX_EPS = 1e-15f;

    private GgmlKQuants() {}

    /**
     * nearest_int: fval + 1.5 * 2^23 puts the integer in the low mantissa bits (the add rounds half to even); the C
     * code asserts |fval| <= 4194303, compiled out in a release build, so the bits are read the same way beyond it.
     */
    static int nearestInt(float fval) {
        float val = fval + 12582912f;
        int i = Float.floatToRawIntBits(val);
        return (i & 0x007fffff) - 0x00400000;
    }

    /** The smallest of 32 values (q4_1's and q5_1's min; FLT_MAX for none, as the C loop starts). */
    private static float min32(float[] x, int first) {
        float min = Float.MAX_VALUE;
        for (int j = 0; j < 32; j++) {
            if (x[first + j] < min) {
                min = x[first + j];
            }
        }
        return min;
    }

    /** The largest of 32 values (q4_1's and q5_1's max). */
    private static float max32(float[] x, int first) {
        float max = -Float.MAX_VALUE;
        for (int j = 0; j < 32; j++) {
            if (x[first + j] > max) {
                max = x[first + j];
            }
        }
        return max;
    }

    /** quantize_row_q4_1_ref: d = (max - min) / 15, m = min, q = min(15, (int8) ((x - min)/d + 0.5)). */
    static void q4_1(float[] x, int first, ByteBuffer out) {
        float min = min32(x, first);
        float max = max32(x, first);
        float d = (max - min) / 15;
        float id = d != 0 ? 1.0f / d : 0.0f;
        out.putShort(Float16.fromFloat(d)).putShort(Float16.fromFloat(min));
        for (int j = 0; j < 16; j++) {
            float x0 = (x[first + j] - min) * id;
            float x1 = (x[first + 16 + j] - min) * id;
            // MIN(15, (int8_t) ...) stored as uint8_t, as q5_0 takes it
            int xi0 = Math.min(15, (byte) (int) (x0 + 0.5f)) & 0xFF;
            int xi1 = Math.min(15, (byte) (int) (x1 + 0.5f)) & 0xFF;
            out.put((byte) (xi0 | (xi1 << 4)));
        }
    }

    /**
     * quantize_row_q5_0_ref: d = max / -16 of the largest magnitude (first of equals),
     * q = min(31, (int8) (x/d + 16.5)).
     */
    static void q5_0(float[] x, int first, ByteBuffer out) {
        float amax = 0;
        float max = 0;
        for (int j = 0; j < 32; j++) {
            float v = x[first + j];
            if (amax < Math.abs(v)) {
                amax = Math.abs(v);
                max = v;
            }
        }
        float d = max / -16;
        float id = d != 0 ? 1.0f / d : 0.0f;
        out.putShort(Float16.fromFloat(d));
        int qh = 0;
        byte[] qs = new byte[16];
        for (int j = 0; j < 16; j++) {
            float x0 = x[first + j] * id;
            float x1 = x[first + 16 + j] * id;
            // MIN(31, (int8_t) ...) then stored as uint8_t: the int8 cast first, the unsigned wrap last
            int xi0 = Math.min(31, (byte) (int) (x0 + 16.5f)) & 0xFF;
            int xi1 = Math.min(31, (byte) (int) (x1 + 16.5f)) & 0xFF;
            qs[j] = (byte) ((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= ((xi0 & 0x10) >> 4) << j;
            qh |= ((xi1 & 0x10) >> 4) << (j + 16);
        }
        out.putInt(qh).put(qs);
    }

    /** quantize_row_q5_1_ref: d = (max - min) / 31, m = min, q = (uint8) ((x - min)/d + 0.5). */
    static void q5_1(float[] x, int first, ByteBuffer out) {
        float min = min32(x, first);
        float max = max32(x, first);
        float d = (max - min) / 31;
        float id = d != 0 ? 1.0f / d : 0.0f;
        out.putShort(Float16.fromFloat(d)).putShort(Float16.fromFloat(min));
        int qh = 0;
        byte[] qs = new byte[16];
        for (int j = 0; j < 16; j++) {
            float x0 = (x[first + j] - min) * id;
            float x1 = (x[first + 16 + j] - min) * id;
            int xi0 = (int) (x0 + 0.5f) & 0xFF;
            int xi1 = (int) (x1 + 0.5f) & 0xFF;
            qs[j] = (byte) ((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= ((xi0 & 0x10) >> 4) << j;
            qh |= ((xi1 & 0x10) >> 4) << (j + 16);
        }
        out.putInt(qh).put(qs);
    }

    /** quantize_row_q4_K_ref: eight 32-value groups, 4-bit levels with a 6-bit scale and min each, fp16 d and dmin. */
    static void q4_K(float[] x, int first, ByteBuffer out) {
        int[] levels = new int[QK_K];
        byte[] scales = new byte[12];
        float[] dm = scaleMinBlock(x, first, 15, -1f, 0.1f, 20, levels, scales);
        putQ4K(Float16.fromFloat(dm[0]), Float16.fromFloat(dm[1]), scales, levels, out);
    }

    /** block_q4_K: d, dmin, scales[12], then two levels 32 apart per byte, per 64 values. */
    static void putQ4K(short d, short dmin, byte[] scales, int[] levels, ByteBuffer out) {
        out.putShort(d).putShort(dmin).put(scales);
        for (int j = 0; j < QK_K; j += 64) {
            for (int l = 0; l < 32; l++) {
                out.put((byte) (levels[j + l] | (levels[j + l + 32] << 4)));
            }
        }
    }

    /** quantize_row_q5_K_ref: as q4_K with 5-bit levels, the fifth bits in qh (two bits per 64 values). */
    static void q5_K(float[] x, int first, ByteBuffer out) {
        int[] levels = new int[QK_K];
        byte[] scales = new byte[12];
        float[] dm = scaleMinBlock(x, first, 31, -0.5f, 0.1f, 15, levels, scales);
        putQ5K(Float16.fromFloat(dm[0]), Float16.fromFloat(dm[1]), scales, levels, out);
    }

    /** block_q5_K: d, dmin, scales[12], qh[32] (each level's fifth bit), then the low nibbles as q4_K's. */
    static void putQ5K(short d, short dmin, byte[] scales, int[] levels, ByteBuffer out) {
        out.putShort(d).putShort(dmin).put(scales);
        byte[] qh = new byte[QK_K / 8];
        byte[] ql = new byte[QK_K / 2];
        int m1 = 1;
        int m2 = 2;
        int q = 0;
        for (int n = 0; n < QK_K; n += 64) {
            for (int j = 0; j < 32; j++) {
                int l1 = levels[n + j];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= (byte) m1;
                }
                int l2 = levels[n + j + 32];
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= (byte) m2;
                }
                ql[q + j] = (byte) (l1 | (l2 << 4));
            }
            m1 <<= 2;
            m2 <<= 2;
            q += 32;
        }
        out.put(qh).put(ql);
    }

    /**
     * The part quantize_row_q4_K_ref and quantize_row_q5_K_ref share: each group's scale and min by make_qkx2_quants
     * (weights av_x + |x|), both quantized to 6 bits against their largest, packed as get_scale_min_k4 unpacks them,
     * and the levels recomputed from the fp16-rounded scales.
     *
     * @return {d, dmin} before their fp16 rounding
     */
    private static float[] scaleMinBlock(float[] x, int first, int nmax, float rmin, float rdelta, int nstep,
            int[] levels, byte[] packed) {
        float[] mins = new float[8];
        float[] scales = new float[8];
        float[] weights = new float[32];
        int[] aux = new int[32];
        float maxScale = 0;
        float maxMin = 0;
        for (int j = 0; j < 8; j++) {
            int group = first + 32 * j;
            float sumX2 = 0;
            for (int l = 0; l < 32; l++) {
                sumX2 += x[group + l] * x[group + l];
            }
            float avX = (float) Math.sqrt(sumX2 / 32);
            for (int l = 0; l < 32; l++) {
                weights[l] = avX + Math.abs(x[group + l]);
            }
            float[] theMin = new float[1];
            scales[j] = makeQkx2Quants(32, nmax, x, group, weights, levels, 32 * j, theMin, aux, rmin, rdelta, nstep,
                    false);
            mins[j] = theMin[0];
            if (scales[j] > maxScale) {
                maxScale = scales[j];
            }
            if (mins[j] > maxMin) {
                maxMin = mins[j];
            }
        }
        float invScale = maxScale > 0 ? 63.f / maxScale : 0.f;
        float invMin = maxMin > 0 ? 63.f / maxMin : 0.f;
        for (int j = 0; j < 8; j++) {
            packScaleMin(packed, j, Math.min(63, nearestInt(invScale * scales[j]) & 0xFF),
                    Math.min(63, nearestInt(invMin * mins[j]) & 0xFF));
        }
        float d = maxScale / 63.f;
        float dmin = maxMin / 63.f;
        requantizeScaleMin(x, first, nmax, packed, Float16.toFloat(Float16.fromFloat(d)),
                Float16.toFloat(Float16.fromFloat(dmin)), levels);
        return new float[] {d, dmin};
    }

    /** Group j's 6-bit scale ls and min lm into q4_K's and q5_K's scales[12], as get_scale_min_k4 unpacks them. */
    static void packScaleMin(byte[] packed, int j, int ls, int lm) {
        if (j < 4) {
            packed[j] = (byte) ls;
            packed[j + 4] = (byte) lm;
        } else {
            packed[j + 4] = (byte) ((ls & 0xF) | ((lm & 0xF) << 4));
            packed[j - 4] |= (byte) ((ls >> 4) << 6);
            packed[j] |= (byte) ((lm >> 4) << 6);
        }
    }

    /** The levels 0..nmax again from the fp16-rounded d and dmin and the packed scales and mins (groups of scale 0 kept). */
    static void requantizeScaleMin(float[] x, int first, int nmax, byte[] packed, float dHalf, float dminHalf,
            int[] levels) {
        for (int j = 0; j < 8; j++) {
            int sc;
            int m;
            if (j < 4) {
                sc = packed[j] & 63;
                m = packed[j + 4] & 63;
            } else {
                sc = (packed[j + 4] & 0xF) | (((packed[j - 4] & 0xFF) >> 6) << 4);
                m = ((packed[j + 4] & 0xFF) >> 4) | (((packed[j] & 0xFF) >> 6) << 4);
            }
            float dj = dHalf * sc;
            if (dj == 0) {
                continue;
            }
            float dmj = dminHalf * m;
            for (int ii = 0; ii < 32; ii++) {
                int l = nearestInt((x[first + 32 * j + ii] + dmj) / dj);
                levels[32 * j + ii] = Math.max(0, Math.min(nmax, l));
            }
        }
    }

    /**
     * make_qkx2_quants: levels 0..nmax for x = scale l - min (min clamped to at most 0); the first guess from the
     * range, then nstep + 1 more scales tried by weighted least squares, the one of least weighted squared error kept.
     */
    static float makeQkx2Quants(int n, int nmax, float[] x, int from, float[] weights, int[] levels, int at,
            float[] theMin, int[] aux, float rmin, float rdelta, int nstep, boolean useMad) {
        float min = x[from];
        float max = x[from];
        float sumW = weights[0];
        float sumX = sumW * x[from];
        for (int i = 1; i < n; i++) {
            if (x[from + i] < min) {
                min = x[from + i];
            }
            if (x[from + i] > max) {
                max = x[from + i];
            }
            float w = weights[i];
            sumW += w;
            sumX += w * x[from + i];
        }
        if (min > 0) {
            min = 0;
        }
        if (max == min) {
            for (int i = 0; i < n; i++) {
                levels[at + i] = 0;
            }
            theMin[0] = -min;
            return 0.f;
        }
        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++) {
            int l = nearestInt(iscale * (x[from + i] - min));
            levels[at + i] = Math.max(0, Math.min(nmax, l));
            float diff = scale * levels[at + i] + min - x[from + i];
            diff = useMad ? Math.abs(diff) : diff * diff;
            bestError += weights[i] * diff;
        }
        for (int is = 0; is <= nstep; is++) {
            iscale = (rmin + rdelta * is + nmax) / (max - min);
            float sumL = 0;
            float sumL2 = 0;
            float sumXl = 0;
            for (int i = 0; i < n; i++) {
                int l = nearestInt(iscale * (x[from + i] - min));
                l = Math.max(0, Math.min(nmax, l));
                aux[i] = l;
                float w = weights[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXl += w * l * x[from + i];
            }
            float determinant = sumW * sumL2 - sumL * sumL;
            if (determinant > 0) {
                float thisScale = (sumW * sumXl - sumX * sumL) / determinant;
                float thisMin = (sumL2 * sumX - sumL * sumXl) / determinant;
                if (thisMin > 0) {
                    thisMin = 0;
                    thisScale = sumXl / sumL2;
                }
                float curError = 0;
                for (int i = 0; i < n; i++) {
                    float diff = thisScale * aux[i] + thisMin - x[from + i];
                    diff = useMad ? Math.abs(diff) : diff * diff;
                    curError += weights[i] * diff;
                }
                if (curError < bestError) {
                    System.arraycopy(aux, 0, levels, at, n);
                    bestError = curError;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        theMin[0] = -min;
        return scale;
    }

    /**
     * quantize_row_q6_K_ref: sixteen 16-value groups by make_qx_quants (nmax 32, weights x^2), their scales quantized
     * to int8 against the largest magnitude (-128 for it), levels recomputed from the fp16-rounded scales; layout
     * ql[128], qh[64], scales[16], d.
     */
    static void q6_K(float[] x, int first, ByteBuffer out) {
        q6_K(x, first, out, null, 0);
    }

    /**
     * quantize_row_q6_K_impl with quant weights qw (from qwAt; null: quantize_row_q6_K_ref): each group's
     * make_qx_quants weighted by qw itself, the rest the same.
     */
    static void q6_K(float[] x, int first, ByteBuffer out, float[] qw, int qwAt) {
        int[] levels = new int[QK_K];
        float[] scales = new float[16];
        float maxScale = 0;
        float maxAbsScale = 0;
        for (int ib = 0; ib < 16; ib++) {
            float scale = makeQxQuants(16, 32, x, first + 16 * ib, levels, 16 * ib, qw, qwAt + 16 * ib);
            scales[ib] = scale;
            float absScale = Math.abs(scale);
            if (absScale > maxAbsScale) {
                maxAbsScale = absScale;
                maxScale = scale;
            }
        }
        if (maxAbsScale < GROUP_MAX_EPS) {
            out.put(new byte[208]).putShort(Float16.fromFloat(0.f));
            return;
        }
        float iscale = -128.f / maxScale;
        short d = Float16.fromFloat(1 / iscale);
        byte[] packedScales = new byte[16];
        for (int ib = 0; ib < 16; ib++) {
            packedScales[ib] = (byte) Math.min(127, nearestInt(iscale * scales[ib]));
        }
        float dHalf = Float16.toFloat(d);
        for (int j = 0; j < 16; j++) {
            float dj = dHalf * packedScales[j];
            if (dj == 0) {
                continue;
            }
            for (int ii = 0; ii < 16; ii++) {
                int l = nearestInt(x[first + 16 * j + ii] / dj);
                levels[16 * j + ii] = Math.max(-32, Math.min(31, l)) + 32;
            }
        }
        byte[] ql = new byte[QK_K / 2];
        byte[] qh = new byte[QK_K / 4];
        for (int j = 0, lo = 0, hi = 0; j < QK_K; j += 128, lo += 64, hi += 32) {
            for (int l = 0; l < 32; l++) {
                int q1 = levels[j + l] & 0xF;
                int q2 = levels[j + l + 32] & 0xF;
                int q3 = levels[j + l + 64] & 0xF;
                int q4 = levels[j + l + 96] & 0xF;
                ql[lo + l] = (byte) (q1 | (q3 << 4));
                ql[lo + l + 32] = (byte) (q2 | (q4 << 4));
                qh[hi + l] = (byte) ((levels[j + l] >> 4) | ((levels[j + l + 32] >> 4) << 2)
                        | ((levels[j + l + 64] >> 4) << 4) | ((levels[j + l + 96] >> 4) << 6));
            }
        }
        out.put(ql).put(qh).put(packedScales).putShort(d);
    }

    /**
     * make_qx_quants with rmse_type 1: signed levels -nmax..nmax-1 stored + nmax, the scale of the least weighted
     * squared error over 19 tries; weights qw from qwAt (llama-quantize's imatrix paths), or x^2 where qw is null
     * (quantize_row_q6_K_ref).
     */
    static float makeQxQuants(int n, int nmax, float[] x, int from, int[] levels, int at, float[] qw, int qwAt) {
        float max = largestMagnitude(x, from, n);
        if (Math.abs(max) < GROUP_MAX_EPS) {
            for (int i = 0; i < n; i++) {
                levels[at + i] = 0;
            }
            return 0.f;
        }
        float[] sums = firstPass(n, nmax, x, from, -nmax / max, levels, at, nmax, qw, qwAt);
        float sumlx = sums[0];
        float suml2 = sums[1];
        float iscale;
        float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
        float best = scale * sumlx;
        for (int is = -9; is <= 9; is++) {
            if (is == 0) {
                continue;
            }
            iscale = -(nmax + 0.1f * is) / max;
            sumlx = 0;
            suml2 = 0;
            for (int i = 0; i < n; i++) {
                float xi = x[from + i];
                int l = nearestInt(iscale * xi);
                l = Math.max(-nmax, Math.min(nmax - 1, l));
                float w = qw != null ? qw[qwAt + i] : xi * xi;
                sumlx += w * xi * l;
                suml2 += w * l * l;
            }
            if (suml2 > 0 && sumlx * sumlx > best * suml2) {
                for (int i = 0; i < n; i++) {
                    int l = nearestInt(iscale * x[from + i]);
                    levels[at + i] = nmax + Math.max(-nmax, Math.min(nmax - 1, l));
                }
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }

    /**
     * quantize_row_q2_K_ref: sixteen 16-value groups of 2-bit levels by make_qkx2_quants (weights |x|, absolute error),
     * each group's scale and min quantized to 4 bits against the largest; layout scales[16], qs[64], d, dmin.
     */
    static void q2_K(float[] x, int first, ByteBuffer out) {
        int[] levels = new int[QK_K];
        float[] mins = new float[16];
        float[] scales = new float[16];
        float[] weights = new float[16];
        int[] aux = new int[16];
        float q4scale = 15.f;
        float maxScale = 0;
        float maxMin = 0;
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++) {
                weights[l] = Math.abs(x[first + 16 * j + l]);
            }
            float[] theMin = new float[1];
            scales[j] = makeQkx2Quants(16, 3, x, first + 16 * j, weights, levels, 16 * j, theMin, aux, -0.5f, 0.1f, 15,
                    true);
            mins[j] = theMin[0];
            if (scales[j] > maxScale) {
                maxScale = scales[j];
            }
            if (mins[j] > maxMin) {
                maxMin = mins[j];
            }
        }
        byte[] packed = new byte[16];
        short d;
        if (maxScale > 0) {
            float iscale = q4scale / maxScale;
            for (int j = 0; j < 16; j++) {
                packed[j] = (byte) nearestInt(iscale * scales[j]);
            }
            d = Float16.fromFloat(maxScale / q4scale);
        } else {
            d = Float16.fromFloat(0.f);
        }
        short dmin;
        if (maxMin > 0) {
            float iscale = q4scale / maxMin;
            for (int j = 0; j < 16; j++) {
                packed[j] |= (byte) (nearestInt(iscale * mins[j]) << 4);
            }
            dmin = Float16.fromFloat(maxMin / q4scale);
        } else {
            dmin = Float16.fromFloat(0.f);
        }
        putQ2K(x, first, levels, packed, d, dmin, out);
    }

    /**
     * q2_K's end, the reference's and the imatrix path's: each group's levels 0..3 again from the fp16 d and dmin
     * times its 4-bit scale and min (groups of scale 0 kept), then scales[16], qs[64], d, dmin.
     */
    static void putQ2K(float[] x, int first, int[] levels, byte[] packed, short d, short dmin, ByteBuffer out) {
        for (int j = 0; j < 16; j++) {
            float dj = Float16.toFloat(d) * (packed[j] & 0xF);
            if (dj == 0) {
                continue;
            }
            float dmj = Float16.toFloat(dmin) * ((packed[j] & 0xFF) >> 4);
            for (int ii = 0; ii < 16; ii++) {
                int l = nearestInt((x[first + 16 * j + ii] + dmj) / dj);
                levels[16 * j + ii] = Math.max(0, Math.min(3, l));
            }
        }
        out.put(packed).put(twoBitQuants(levels)).putShort(d).putShort(dmin);
    }

    /** The low two bits of each level, four levels 32 apart in a byte, per 128 values (q2_K's and q3_K's qs). */
    private static byte[] twoBitQuants(int[] levels) {
        byte[] qs = new byte[QK_K / 4];
        for (int j = 0; j < QK_K; j += 128) {
            for (int l = 0; l < 32; l++) {
                qs[j / 4 + l] = (byte) (levels[j + l] | (levels[j + l + 32] << 2) | (levels[j + l + 64] << 4)
                        | (levels[j + l + 96] << 6));
            }
        }
        return qs;
    }

    /**
     * quantize_row_q3_K_ref: sixteen 16-value groups by make_q3_quants (levels -4..3, refined by x^2-weighted least
     * squares), their scales quantized to 6 bits against the largest magnitude; layout hmask[32] (each level's third
     * bit), qs[64], scales[12], d.
     */
    static void q3_K(float[] x, int first, ByteBuffer out) {
        int[] levels = new int[QK_K];
        float[] scales = new float[16];
        float maxScale = 0;
        float amax = 0;
        for (int j = 0; j < 16; j++) {
            scales[j] = makeQ3Quants(16, 4, x, first + 16 * j, levels, 16 * j);
            float scale = Math.abs(scales[j]);
            if (scale > amax) {
                amax = scale;
                maxScale = scales[j];
            }
        }
        byte[] packed = new byte[12];
        short d;
        if (maxScale != 0) {
            float iscale = -32.f / maxScale;
            for (int j = 0; j < 16; j++) {
                byte l = (byte) nearestInt(iscale * scales[j]);
                packQ3Scale(packed, j, (byte) (Math.max(-32, Math.min(31, l)) + 32));
            }
            d = Float16.fromFloat(1 / iscale);
        } else {
            d = Float16.fromFloat(0.f);
        }
        putQ3K(x, first, levels, packed, d, out);
    }

    /** Group j's 6-bit scale l (biased by 32) into q3_K's scales[12]: low nibbles in 0-7, high 2 bits in 8-11. */
    static void packQ3Scale(byte[] packed, int j, int l) {
        if (j < 8) {
            packed[j] = (byte) (l & 0xF);
        } else {
            packed[j - 8] |= (byte) ((l & 0xF) << 4);
        }
        packed[j % 4 + 8] |= (byte) ((l >> 4) << (2 * (j / 4)));
    }

    /**
     * q3_K's end, the reference's and the imatrix path's: the levels -4..3 again from the fp16 d times each packed
     * scale (groups of scale 0 kept), then hmask[32] (each level's third bit), qs[64], scales[12], d.
     */
    static void putQ3K(float[] x, int first, int[] levels, byte[] packed, short d, ByteBuffer out) {
        for (int j = 0; j < 16; j++) {
            int sc = j < 8 ? packed[j] & 0xF : (packed[j - 8] & 0xFF) >> 4;
            sc = (byte) ((sc | ((((packed[8 + j % 4] & 0xFF) >> (2 * (j / 4))) & 3) << 4)) - 32);
            float dj = Float16.toFloat(d) * sc;
            if (dj == 0) {
                continue;
            }
            for (int ii = 0; ii < 16; ii++) {
                int l = nearestInt(x[first + 16 * j + ii] / dj);
                levels[16 * j + ii] = Math.max(-4, Math.min(3, l)) + 4;
            }
        }
        byte[] hmask = new byte[QK_K / 8];
        int m = 0;
        int hm = 1;
        for (int j = 0; j < QK_K; j++) {
            if (levels[j] > 3) {
                hmask[m] |= (byte) hm;
                levels[j] -= 4;
            }
            if (++m == QK_K / 8) {
                m = 0;
                hm <<= 1;
            }
        }
        out.put(hmask).put(twoBitQuants(levels)).put(packed).putShort(d);
    }

    /**
     * make_q3_quants with do_rmse: levels -nmax..nmax-1 from the largest magnitude, then up to five passes moving one
     * level at a time where that lowers the x^2-weighted squared error; returned levels + nmax.
     */
    private static float makeQ3Quants(int n, int nmax, float[] x, int from, int[] levels, int at) {
        float max = largestMagnitude(x, from, n);
        if (Math.abs(max) < GROUP_MAX_EPS) {
            for (int i = 0; i < n; i++) {
                levels[at + i] = 0;
            }
            return 0.f;
        }
        float[] sums = firstPass(n, nmax, x, from, -nmax / max, levels, at, 0, null, 0);
        float sumlx = sums[0];
        float suml2 = sums[1];
        for (int itry = 0; itry < 5; itry++) {
            int changed = 0;
            for (int i = 0; i < n; i++) {
                float xi = x[from + i];
                float w = xi * xi;
                float slx = sumlx - w * xi * levels[at + i];
                if (slx > 0) {
                    float sl2 = suml2 - w * levels[at + i] * levels[at + i];
                    int newL = nearestInt(xi * sl2 / slx);
                    newL = Math.max(-nmax, Math.min(nmax - 1, newL));
                    if (newL != levels[at + i]) {
                        slx += w * xi * newL;
                        sl2 += w * newL * newL;
                        if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                            levels[at + i] = newL;
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
        for (int i = 0; i < n; i++) {
            levels[at + i] += nmax;
        }
        return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
    }

    /** The value of largest magnitude (the first of equals; 0 when all are), as make_qx_quants finds it. */
    private static float largestMagnitude(float[] x, int from, int n) {
        float max = 0;
        float amax = 0;
        for (int i = 0; i < n; i++) {
            float ax = Math.abs(x[from + i]);
            if (ax > amax) {
                amax = ax;
                max = x[from + i];
            }
        }
        return max;
    }

    /**
     * make_qx_quants' and make_q3_quants' first pass: levels nearest_int(iscale x) in -nmax..nmax-1, stored + offset,
     * and the sums of l x and l^2 weighted by qw (x^2 where null).
     *
     * @return {sumlx, suml2}
     */
    private static float[] firstPass(int n, int nmax, float[] x, int from, float iscale, int[] levels, int at,
            int offset, float[] qw, int qwAt) {
        float sumlx = 0;
        float suml2 = 0;
        for (int i = 0; i < n; i++) {
            float xi = x[from + i];
            int l = nearestInt(iscale * xi);
            l = Math.max(-nmax, Math.min(nmax - 1, l));
            levels[at + i] = l + offset;
            float w = qw != null ? qw[qwAt + i] : xi * xi;
            sumlx += w * xi * l;
            suml2 += w * l * l;
        }
        return new float[] {sumlx, suml2};
    }
}
