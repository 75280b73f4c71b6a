package io.mixtune.lora.init;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.LoraInit;
import io.mixtune.lora.nf4.Nf4Linear;
import io.mixtune.lora.nf4.Nf4Loading;
import io.mixtune.lora.nf4.Nf4Tensor;
import io.mixtune.model.nn.Linear;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * LoftQ's one-shot (PEFT's replace_lora_weights_loftq): the base is the NF4 weight QLoRA loads anyway, and B0 A0 is
 * the best rank-r approximation of its quantisation error E = W - dequantize(NF4(W)): ||E - B0 A0|| equals
 * sqrt(sum of E's squared singular values past r), less than ||E||. PEFT's own LoftQ needs CUDA and bitsandbytes, so
 * this holds mixtune to the math (Eckart-Young) instead of to a PEFT golden.
 */
class LoftqTest {
    @Test
    void theStartIsTheBestRankRApproximationOfTheQuantisationError() {
        int out = 96;
        int in = 64;
        int r = 4;
        float[] w = weight(9, out * in);
        LoraConfig config = LoraConfig.of(r, r, List.of("q_proj"));
        Map<String, float[][]> starts = new LinkedHashMap<>();
        try (NDManager manager = NDManager.newBaseManager()) {
            Linear linear = MutatedInit.factory(Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION), config,
                    LoraInit.parse("loftq"), 0, starts).create("model.layers.0.self_attn.q_proj", w.clone(),
                    new Shape(out, in), manager);
            float[] dequantized = Nf4Tensor.quantize(w, new long[] {out, in}, true).dequantize();
            float[] base = ((Nf4Linear) linear).dequantizedWeight(manager, DataType.FLOAT32).toFloatArray();
            assertArrayEquals(dequantized, base, "the base is NF4(W), as without LoftQ");
            float[] error = new float[w.length];
            for (int i = 0; i < w.length; i++) {
                error[i] = w[i] - dequantized[i];
            }
            float[][] ab = starts.get("model.layers.0.self_attn.q_proj");
            double remaining = 0;
            double total = 0;
            for (int i = 0; i < out; i++) {
                for (int c = 0; c < in; c++) {
                    double update = 0;
                    for (int k = 0; k < r; k++) {
                        update += ab[1][i * r + k] * ab[0][k * in + c];
                    }
                    double e = error[i * in + c];
                    remaining += (e - update) * (e - update);
                    total += e * e;
                }
            }
            LowRankSvd.Triplets all = LowRankSvd.exact(error, out, in, in);
            double tail = 0;
            for (int j = r; j < in; j++) {
                tail += all.s()[j] * all.s()[j];
            }
            assertEquals(Math.sqrt(tail), Math.sqrt(remaining), 1e-5 * Math.sqrt(total));
            assertTrue(remaining < 0.95 * total, remaining + " of " + total);
        }
    }

    @Test
    void aModuleQloraKeepsInFullPrecisionStartsAsPeftsDefault() {
        // lm_head (and the router) stay full precision under NF4: no quantisation error to take up. PEFT's
        // replace_lora_weights_loftq replaces Linear4bit layers only, so such a targeted layer keeps the default
        // start (A Kaiming-uniform, B zero): the model is unchanged at step 0. The start of E = W - NF4(W) there
        // would add B0 A0 to an unquantized weight.
        int out = 96;
        int in = 64;
        int r = 4;
        float[] w = weight(2, out * in);
        Map<String, float[][]> starts = new LinkedHashMap<>();
        try (NDManager manager = NDManager.newBaseManager()) {
            Linear linear = MutatedInit.factory(Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION),
                    LoraConfig.of(r, r, List.of("lm_head")), LoraInit.parse("loftq"), 3, starts)
                    .create("lm_head", w.clone(), new Shape(out, in), manager);
            assertTrue(!(linear instanceof Nf4Linear), "lm_head stays dense");
            float[][] ab = starts.get("lm_head");
            assertArrayEquals(new float[out * r], ab[1], "B starts at zero");
            double bound = 1 / Math.sqrt(in);
            for (float a : ab[0]) {
                assertTrue(Math.abs(a) <= bound, "A Kaiming-uniform within 1/sqrt(in): " + a);
            }
        }
    }

    @Test
    void requantizingADequantizedNf4WeightKeepsItsCodes() {
        // Whether NF4(dequantize(NF4(W))) = NF4(W) in mixtune's NF4 (blockwise 64 with double quantisation): what a
        // LoftQ base saved dequantized (PEFT's loftq_init, loftq_iter > 1) would go through when QLoRA loads it again.
        float[] w = weight(4, 128 * 512);
        long[] shape = {128, 512};
        float[] once = Nf4Tensor.quantize(w, shape, true).dequantize();
        float[] twice = Nf4Tensor.quantize(once, shape, true).dequantize();
        int differ = 0;
        for (int i = 0; i < once.length; i++) {
            if (once[i] != twice[i]) {
                differ++;
            }
        }
        System.out.printf("NF4 re-quantized: %d of %d values differ%n", differ, once.length);
        float[] plain = Nf4Tensor.quantize(w, shape, false).dequantize();
        assertArrayEquals(plain, Nf4Tensor.quantize(plain, shape, false).dequantize(),
                "without double quantisation, re-quantizing is the identity");
    }

    /** A weight of N(0, 0.15^2) values, as a trained projection's scale. */
    private static float[] weight(long seed, int size) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] w = new float[size];
        for (int i = 0; i < w.length; i++) {
            w[i] = (float) (0.15 * random.nextGaussian());
        }
        return w;
    }
}
