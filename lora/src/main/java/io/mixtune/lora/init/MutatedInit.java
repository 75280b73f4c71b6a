package io.mixtune.lora.init;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.LoraInit;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.nf4.Nf4Linear;
import io.mixtune.lora.nf4.Nf4Tensor;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.nn.Linear;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * PiSSA (Meng et al. 2024) and OLoRA (Büyükakyüz 2024) as PEFT 0.21 starts them (tuners/lora/layer.py pissa_init and
 * olora_init): A0 and B0 from a factorisation of the full-precision weight W, and the base weight replaced by the
 * residual W - scale B0 A0, so the model computes W at step 0.
 *
 * <p>mixtune quantizes a checkpoint as it loads it, so the residual is computed from the checkpoint's weight before
 * NF4 quantizes it: QPiSSA in one step, as PEFT's PiSSA guide recommends (its pissa_init refuses a quantized weight;
 * one initialises in full precision, saves the residual, and reloads it in 4 bits).
 */
public final class MutatedInit {
    private MutatedInit() {}

    /** A0 [r, in] and B0 [out, r], row-major float32, PEFT's lora_A and lora_B before training. */
    public record Factors(float[] a, float[] b) {}

    /**
     * A checkpoint loader's factory that starts every module {@code config} targets with {@code init} (PiSSA, OLoRA
     * or LoftQ): it puts the module's A0, B0 into {@code initial} (module name to {A0, B0}) and hands the residual (for
     * LoftQ the weight itself) to {@code linears} (which then quantizes it, for QLoRA).
     *
     * @param seed seeds pissa_niter_N's random start, per module
     */
    public static MistralCheckpoint.LinearFactory factory(MistralCheckpoint.LinearFactory linears, LoraConfig config,
            LoraInit init, long seed, Map<String, float[][]> initial) {
        if (!init.readsBase()) {
            throw new IllegalArgumentException(init + " does not read the base weights");
        }
        return (name, weight, shape, manager) -> {
            if (!config.targets(name)) {
                return linears.create(name, weight, shape, manager);
            }
            int out = (int) shape.get(0);
            int in = (int) shape.get(1);
            int r = config.rankOf(name);
            double scale = config.scaleOf(name);
            Linear quantized = null;
            if (init.loftq()) {
                quantized = linears.create(name, weight, shape, manager); // the base stays W, quantized as ever
                if (!(quantized instanceof Nf4Linear)) {
                    // Kept in full precision (lm_head, the router): no quantisation error to take up. PEFT's
                    // replace_lora_weights_loftq replaces Linear4bit layers only; the others keep the default start.
                    initial.put(name, LoraModel.peftDefaultStart(seed, name, r, in, out));
                    return quantized;
                }
            }
            Factors factors;
            try {
                factors = factors(init, weight, out, in, r, scale,
                        new SplittableRandom(seed * 0x9E3779B97F4A7C15L + name.hashCode()), manager);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(name + ": " + e.getMessage(), e);
            }
            initial.put(name, new float[][] {factors.a(), factors.b()});
            if (quantized != null) {
                return quantized;
            }
            return linears.create(name, residual(weight, out, in, factors, scale, manager), shape, manager);
        };
    }

    /** A0 and B0 of one weight W [out, in] (row-major), computed on {@code manager}'s device where it pays. */
    public static Factors factors(LoraInit init, float[] weight, int out, int in, int r, double scale,
            SplittableRandom random, NDManager manager) {
        if (r > Math.min(out, in)) {
            throw new IllegalArgumentException(init + " needs r <= min(out, in) = " + Math.min(out, in) + ", got r "
                    + r + " (PEFT fails on it too: W has no more singular vectors)");
        }
        return switch (init.kind()) {
            case PISSA -> pissa(init, weight, out, in, r, scale, random, manager);
            case OLORA -> olora(weight, out, in, r, manager);
            case LOFTQ -> loftq(weight, out, in, r, random, manager);
            default -> throw new IllegalArgumentException(init + " leaves the base weights as they are");
        };
    }

    /**
     * pissa_init: with W = V S U^T, B0 = V_r sqrt(S_r / scale) and A0 = sqrt(S_r / scale) U_r^T, so scale B0 A0 is
     * W's best rank-r approximation.
     */
    private static Factors pissa(LoraInit init, float[] weight, int out, int in, int r, double scale,
            SplittableRandom random, NDManager manager) {
        return pissa(init, weight, out, in, r, scale, random, manager, true);
    }

    /** @param refuseUnsettled false for LoftQ, whose error matrix has a nearly flat spectrum (LowRankSvd#converged) */
    private static Factors pissa(LoraInit init, float[] weight, int out, int in, int r, double scale,
            SplittableRandom random, NDManager manager, boolean refuseUnsettled) {
        LowRankSvd.Triplets top;
        if (init.niter() == LoraInit.EXACT && Math.min(out, in) <= LowRankSvd.EXACT_MAX_DIM) {
            top = LowRankSvd.exact(weight, out, in, r);
        } else {
            try (NDManager scratch = manager.newSubManager()) {
                NDArray w = scratch.create(weight, new Shape(out, in));
                top = init.niter() == LoraInit.EXACT ? LowRankSvd.converged(w, r, random, refuseUnsettled)
                        : LowRankSvd.halko(w, r, init.niter(), random);
            }
        }
        float[] a = new float[r * in];
        float[] b = new float[out * r];
        for (int j = 0; j < r; j++) {
            // torch: Sr /= scaling, then sqrt, all in float32
            double root = Math.sqrt((float) (top.s()[j] / scale));
            for (int c = 0; c < in; c++) {
                a[j * in + c] = (float) (root * top.v()[j][c]);
            }
            for (int i = 0; i < out; i++) {
                b[i * r + j] = (float) (top.u()[j][i] * root);
            }
        }
        return new Factors(a, b);
    }

    /**
     * LoftQ's one-shot as PEFT's replace_lora_weights_loftq (utils/loftq_utils.py _loftq_init_new and
     * _low_rank_decomposition): with E = W - dequantize(NF4(W)) = U S V^T, B0 = U_r sqrt(S_r), A0 = sqrt(S_r) V_r^T.
     * NF4(W) is the base mixtune loads (blockwise 64, double quantisation, bit-equal to bitsandbytes'). As PEFT, the
     * scale is not divided out: B0 A0 is E's best rank-r approximation, and the start scale B0 A0 is only with
     * lora_alpha = r.
     */
    private static Factors loftq(float[] weight, int out, int in, int r, SplittableRandom random, NDManager manager) {
        float[] error = Nf4Tensor.quantize(weight, new long[] {out, in}, true).dequantize();
        for (int i = 0; i < error.length; i++) {
            error[i] = weight[i] - error[i];
        }
        return pissa(new LoraInit(LoraInit.Kind.PISSA, LoraInit.EXACT), error, out, in, r, 1.0, random, manager,
                false);
    }

    /** olora_init: W = QR, B0 = Q[:, :r], A0 = R[:r] (= Q_r^T W), by Householder as LAPACK's geqrf. */
    private static Factors olora(float[] weight, int out, int in, int r, NDManager manager) {
        double[][] columns = new double[r][out];
        for (int i = 0; i < out; i++) {
            for (int j = 0; j < r; j++) {
                columns[j][i] = weight[i * in + j];
            }
        }
        // The first r reflectors depend on W's first r columns only, so R's first r rows are Q_r^T W.
        ThinQr.Result qr = ThinQr.of(columns);
        float[] b = new float[out * r];
        for (int i = 0; i < out; i++) {
            for (int j = 0; j < r; j++) {
                b[i * r + j] = (float) qr.q()[j][i];
            }
        }
        float[] a = new float[r * in];
        double[][] rows = new double[r][in];
        for (int i = 0; i < out; i++) {
            for (int j = 0; j < r; j++) {
                double qji = qr.q()[j][i];
                double[] row = rows[j];
                int offset = i * in;
                for (int c = 0; c < in; c++) {
                    row[c] += qji * weight[offset + c];
                }
            }
        }
        for (int j = 0; j < r; j++) {
            for (int c = 0; c < in; c++) {
                // R is upper triangular: below its diagonal Q_r^T W holds rounding noise, which geqrf writes as 0
                a[j * in + c] = c < j ? 0f : (float) rows[j][c];
            }
            a[j * in + j] = (float) qr.r()[j][j];
        }
        return new Factors(a, b);
    }

    /** W - (scale B0) A0 in float32, as PEFT's weight.data - scaling * lora_B @ lora_A. */
    public static float[] residual(float[] weight, int out, int in, Factors factors, double scale,
            NDManager manager) {
        int r = factors.a().length / in;
        try (NDManager scratch = manager.newSubManager()) {
            NDArray b = scratch.create(factors.b(), new Shape(out, r)).mul((float) scale);
            NDArray update = b.matMul(scratch.create(factors.a(), new Shape(r, in)));
            return scratch.create(weight, new Shape(out, in)).sub(update).toFloatArray();
        }
    }
}
