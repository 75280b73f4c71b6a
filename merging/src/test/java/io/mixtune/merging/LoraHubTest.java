package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * LoraHub's search and composition, with losses whose optimum is known: a quadratic, and the distance of the composed
 * delta to one input's delta. The loss of a real model on examples is trainer's (LoraHubMergeTest).
 */
class LoraHubTest {
    private static final Path ADAPTERS = MergeGoldenTest.GOLDEN.resolve("adapters");

    /** (w0 - 1)^2 + (w1 + 0.5)^2 + 1: with the L1 term the optimum is w = (0.975, -0.475). */
    private static double quadratic(double[] w) {
        return (w[0] - 1) * (w[0] - 1) + (w[1] + 0.5) * (w[1] + 0.5) + 1;
    }

    @Test
    void theSearchNearsTheKnownOptimumAndRepeatsItselfForOneSeed() {
        LoraHub.Search first = new LoraHub.Search(LoraHubTest::quadratic);
        first.run(2, new LoraHub.Settings(40, 7));
        LoraHub.Search again = new LoraHub.Search(LoraHubTest::quadratic);
        again.run(2, new LoraHub.Settings(40, 7));
        LoraHub.Search otherSeed = new LoraHub.Search(LoraHubTest::quadratic);
        otherSeed.run(2, new LoraHub.Settings(40, 8));

        assertEquals(40, first.evaluations());
        assertArrayEquals(first.bestWeights(), again.bestWeights());
        assertFalse(Arrays.equals(first.bestWeights(), otherSeed.bestWeights()), "the seed drives CMA-ES");
        double[] w = first.bestWeights();
        double optimum = LoraHub.objective(quadratic(new double[] {0.975, -0.475}), new double[] {0.975, -0.475});
        double found = LoraHub.objective(quadratic(w), w);
        System.out.printf("lorahub search on a quadratic: %s, objective %.5f vs optimum %.5f%n", Arrays.toString(w),
                found, optimum);
        assertTrue(found - optimum < 0.05, "objective " + found + " at " + Arrays.toString(w)
                + " vs optimum " + optimum);
        for (double weight : w) {
            assertTrue(Math.abs(weight) <= LoraHub.WEIGHT_BOUND);
        }
    }

    /** Module -> delta = scale B A [out * in] of a written adapter. */
    private static Map<String, double[]> deltas(Path adapter) {
        LoraConfig config = PeftAdapter.readConfig(adapter.resolve(PeftAdapter.CONFIG_FILE));
        Map<String, double[]> deltas = new TreeMap<>();
        try (SafetensorsReader reader = SafetensorsReader.open(adapter.resolve(PeftAdapter.WEIGHTS_FILE))) {
            for (String key : reader.names()) {
                if (key.endsWith(".lora_A.weight")) {
                    String module = PeftAdapter.moduleOf(key);
                    long[] aShape = reader.info(key).shape();
                    long[] bShape = reader.info(PeftAdapter.bKey(module)).shape();
                    deltas.put(module, delta(reader.readFloats(key), reader.readFloats(PeftAdapter.bKey(module)),
                            (int) bShape[0], (int) aShape[0], (int) aShape[1], config.scaleOf(module)));
                }
            }
        }
        return deltas;
    }

    private static double[] delta(float[] a, float[] b, int out, int rank, int in, double scale) {
        double[] d = new double[out * in];
        for (int o = 0; o < out; o++) {
            for (int k = 0; k < rank; k++) {
                for (int i = 0; i < in; i++) {
                    d[o * in + i] += scale * b[o * rank + k] * a[k * in + i];
                }
            }
        }
        return d;
    }

    /** 1 + the mean squared distance of the candidate's delta to a0's: minimised by a0 alone. */
    private static double distanceToA0(LoraHub.Candidate candidate, Map<String, double[]> target) {
        double sum = 0;
        long count = 0;
        for (Map.Entry<String, float[][]> module : candidate.factors().entrySet()) {
            double[] expected = target.get(module.getKey());
            float[] a = module.getValue()[0];
            float[] b = module.getValue()[1];
            int rank = candidate.config().rankOf(module.getKey());
            int out = b.length / rank;
            int in = a.length / rank;
            double[] d = delta(a, b, out, rank, in, candidate.config().scaleOf(module.getKey()));
            for (int i = 0; i < d.length; i++) {
                sum += (d[i] - expected[i]) * (d[i] - expected[i]);
            }
            count += d.length;
        }
        return 1 + 100 * sum / count;
    }

    @Test
    void theComposedAdapterLeansOnTheAdapterTheLossWantsAndIsWrittenAsTheExactWeightedSum(@TempDir Path dir) {
        List<Path> inputs = List.of(ADAPTERS.resolve("a0"), ADAPTERS.resolve("a1"));
        Map<String, double[]> target = deltas(inputs.get(0));
        LoraHub.Result result = LoraHub.compose(inputs, dir.resolve("hub"), false, new LoraHub.Settings(40, 1),
                candidate -> distanceToA0(candidate, target));
        LoraHub.Result again = LoraHub.compose(inputs, dir.resolve("hub-again"), false, new LoraHub.Settings(40, 1),
                candidate -> distanceToA0(candidate, target));

        assertArrayEquals(result.weights(), again.weights());
        assertEquals(42, result.evaluations(), "2 inputs alone + a budget of 40");
        assertEquals(1.0, result.inputLosses()[0], 1e-12);
        assertTrue(result.inputLosses()[1] > 1.0);
        double[] w = result.weights();
        assertTrue(w[0] > Math.abs(w[1]) && w[0] > 0.5, "weights " + Arrays.toString(w));
        double minInput = Math.min(result.inputLosses()[0], result.inputLosses()[1]);
        assertTrue(result.objective() <= minInput + LoraHub.L1_PENALTY, "objective " + result.objective());

        System.out.printf("lorahub towards a0: inputs %s, weights %s, loss %.5f%n",
                Arrays.toString(result.inputLosses()), Arrays.toString(w), result.loss());
        // The file is sum w_i delta_i, exactly up to float rounding.
        Map<String, double[]> written = deltas(dir.resolve("hub"));
        Map<String, double[]> d1 = deltas(inputs.get(1));
        assertEquals(target.keySet(), written.keySet());
        double worst = 0;
        for (String module : target.keySet()) {
            for (int i = 0; i < target.get(module).length; i++) {
                double expected = w[0] * target.get(module)[i] + w[1] * d1.get(module)[i];
                worst = Math.max(worst, Math.abs(written.get(module)[i] - expected));
            }
        }
        assertTrue(worst < 1e-5, "written vs sum w_i delta_i: " + worst);
    }

    @Test
    void adaptersOfOtherTargetsAreRefusedNamingAModule(@TempDir Path dir) {
        Path a0 = ADAPTERS.resolve("a0");
        Path a2 = ADAPTERS.resolve("a2");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LoraHub.compose(List.of(a0, a2),
                dir.resolve("hub"), false, new LoraHub.Settings(40, 0), candidate -> 1.0));
        assertTrue(e.getMessage().contains("adapt different modules: model.layers.0.mlp.down_proj in " + a0
                + " but not in " + a2), e.getMessage());
        assertFalse(Files.exists(dir.resolve("hub")));
    }
}
