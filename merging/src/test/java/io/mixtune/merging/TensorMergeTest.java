package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** The per-tensor formulas on values small enough to check by hand. */
class TensorMergeTest {

    private static List<float[]> of(float[]... tensors) {
        List<float[]> copies = new ArrayList<>();
        for (float[] t : tensors) {
            copies.add(t.clone());
        }
        return copies;
    }

    @Test
    void weightedAverageAndTheEmaItsCoefficientsUnroll() {
        double[] c = WeightedAverage.coefficients(List.of(1.0, 3.0), true);
        assertArrayEquals(new double[] {0.25, 0.75}, c);
        assertArrayEquals(new float[] {2.5f, 3.5f},
                new WeightedAverage(c).merge("w", null, of(new float[] {1, 2}, new float[] {3, 4})));
        // ema with decay 0.5 over 1, 2, 4: 1 -> 1.5 -> 2.75, i.e. 0.25 * 1 + 0.25 * 2 + 0.5 * 4.
        assertArrayEquals(new double[] {0.25, 0.25, 0.5}, WeightedAverage.emaCoefficients(3, 0.5));
        assertArrayEquals(new float[] {2.75f}, new WeightedAverage(WeightedAverage.emaCoefficients(3, 0.5))
                .merge("w", null, of(new float[] {1}, new float[] {2}, new float[] {4})));
    }

    @Test
    void tiesTrimsElectsTheSignOfTheMassAndAveragesTheAgreeingOnes() {
        float[] base = {0, 0, 0, 0};
        // Deltas: model 0 (+3, -1, +2, 0.5), model 1 (-1, -2, +2, -0.1); density 0.75 keeps 3 of 4 entries of each.
        List<float[]> models = of(new float[] {3, -1, 2, 0.5f}, new float[] {-1, -2, 2, -0.1f});
        float[] merged = new TaskArithmetic(MergeMethod.TIES, new double[] {1, 1}, new double[] {0.75, 0.75}, true, 1,
                false, 0).merge("w", base, models);
        // Trimmed: (3, -1, 2, 0) and (-1, -2, 2, 0). Mass (2, -3, 4, 0): signs +, -, +, + (0 counts as +).
        // Entry 0: only model 0 agrees -> 3 / 1. Entry 1: both -> -3 / 2. Entry 2: both -> 4 / 2. Entry 3: none -> 0.
        assertArrayEquals(new float[] {3, -1.5f, 2, 0}, merged);
    }

    @Test
    void taskArithmeticAddsTheWeightedTaskVectorsScaledByLambda() {
        float[] merged = new TaskArithmetic(MergeMethod.TASK_ARITHMETIC, new double[] {1, 0.5}, new double[] {1, 1},
                false, 2, true, 0).merge("w", new float[] {1, 1}, of(new float[] {2, 0}, new float[] {3, 5}));
        // base + 2 * (1 * (1, -1) + 0.5 * (2, 4)) = (1, 1) + 2 * (2, 1) = (5, 3).
        assertArrayEquals(new float[] {5, 3}, merged);
    }

    @Test
    void magnitudeTrimKeepsExactlyKAndBreaksTiesByIndex() {
        float[] d = {0.5f, -0.5f, 0.1f, 0.5f, -0.9f, 0.0f};
        MagnitudeTrim.keepLargest(d, 0.5);
        // k = 3: -0.9, then two of the three 0.5s, the lower indices first.
        assertArrayEquals(new float[] {0.5f, -0.5f, 0, 0, -0.9f, 0}, d);
        float[] all = {1, 2};
        MagnitudeTrim.keepLargest(all, 1.0);
        assertArrayEquals(new float[] {1, 2}, all, "density 1 keeps everything");
        float[] none = {1, 2, 3};
        MagnitudeTrim.keepLargest(none, 0.2);
        assertArrayEquals(new float[] {0, 0, 0}, none, "floor(0.2 * 3) = 0 keeps nothing");
    }

    @Test
    void dareKeepsAboutDensityBySplitMix64() {
        int n = 100_000;
        float[] d = new float[n];
        java.util.Arrays.fill(d, 1f);
        DareMask.drop(d, 0.3, 42, 1, "model.layers.0.mlp.up_proj.weight");
        int kept = 0;
        for (float x : d) {
            assertTrue(x == 0f || x == 1f);
            kept += x == 0f ? 0 : 1;
        }
        assertEquals(0.3, kept / (double) n, 0.005);
        // The documented generator is SplittableRandom's: its stream from the same seed draws the same uniforms.
        long stream = DareMask.stream(42, 1, "model.layers.0.mlp.up_proj.weight");
        SplittableRandom random = new SplittableRandom(stream);
        float[] again = new float[16];
        java.util.Arrays.fill(again, 1f);
        DareMask.drop(again, 0.3, 42, 1, "model.layers.0.mlp.up_proj.weight");
        for (float x : again) {
            assertEquals(random.nextDouble() < 0.3, x == 1f);
        }
        assertTrue(DareMask.stream(42, 0, "a") != DareMask.stream(42, 1, "a") && DareMask.stream(42, 0, "a")
                != DareMask.stream(42, 0, "b") && DareMask.stream(42, 0, "a") != DareMask.stream(43, 0, "a"));
    }

    /**
     * mergekit's rescale (sparsify.py rescaled_masked_tensor, L1): the kept entries times sum|d| / sum|kept|, not
     * DARE's 1 / density. The mask is drawn here from SplittableRandom, the generator DareMask documents.
     */
    @Test
    void dareRescalesTheKeptEntriesToTheTaskVectorsL1Norm() {
        float[] delta = {1, -2, 3, -4, 5, -6, 7, -8};
        SplittableRandom random = new SplittableRandom(DareMask.stream(5, 0, "w"));
        float[] expected = new float[delta.length];
        double keptNorm = 0;
        for (int j = 0; j < delta.length; j++) {
            if (random.nextDouble() < 0.5) {
                expected[j] = delta[j];
                keptNorm += Math.abs(delta[j]);
            }
        }
        assertTrue(keptNorm > 0 && keptNorm < 36, "seed 5 keeps some entries, not all");
        for (int j = 0; j < delta.length; j++) {
            expected[j] = (float) (expected[j] * 36 / keptNorm);
        }
        float[] merged = new TaskArithmetic(MergeMethod.DARE_LINEAR, new double[] {1}, new double[] {0.5}, false, 1,
                true, 5).merge("w", new float[8], of(delta));
        assertArrayEquals(expected, merged, 1e-6f);
        float[] unscaled = new TaskArithmetic(MergeMethod.DARE_LINEAR, new double[] {1}, new double[] {0.5}, false, 1,
                false, 5).merge("w", new float[8], of(delta));
        for (int j = 0; j < delta.length; j++) {
            assertEquals(expected[j] == 0 ? 0 : delta[j], unscaled[j], "rescale: false keeps the survivors as they are");
        }
    }

    /**
     * Breadcrumbs on magnitudes (1, 3, 2, 2, 0.5, 2, 4, 1), whose stable ascending order is indices 4, 0, 7, 2, 3, 5,
     * 1, 6: density 0.5 and gamma 0.25 drop 2 from each end; gamma 0.375 drops 3 from the top (the tie at 2 loses its
     * highest index, 5) and 1 from the bottom; gamma 0.1 drops none from the top, where mergekit would keep nothing.
     */
    @Test
    void breadcrumbsDropsTheLargestAndTheSmallestMagnitudes() {
        float[] delta = {1, -3, 2, 2, 0.5f, -2, 4, 1};
        float[] middle = delta.clone();
        MagnitudeTrim.keepMiddle(middle, 0.5, 0.25);
        assertArrayEquals(new float[] {0, 0, 2, 2, 0, -2, 0, 1}, middle);
        float[] topTie = delta.clone();
        MagnitudeTrim.keepMiddle(topTie, 0.5, 0.375);
        assertArrayEquals(new float[] {1, 0, 2, 2, 0, 0, 0, 1}, topTie);
        float[] noTop = delta.clone();
        MagnitudeTrim.keepMiddle(noTop, 0.5, 0.1);
        assertArrayEquals(new float[] {0, -3, 0, 2, 0, -2, 4, 0}, noTop);
    }

    /**
     * DELLA's keep probabilities by magnitude rank within each row of 3: 0.5 -/+ 0.4 spread as 0.1, 0.5, 0.9; the draws
     * are SplitMix64's (java.util.SplittableRandom from the tensor's stream), as DARE's.
     */
    @Test
    void dellaKeepsEachEntryWithAProbabilityRankedByItsMagnitudeInItsRow() {
        float[] delta = {3, -1, 2, 0.2f, -0.1f, 0.3f};
        double[] probability = {0.9, 0.1, 0.5, 0.5, 0.1, 0.9};
        SplittableRandom random = new SplittableRandom(DareMask.stream(9, 1, "w"));
        float[] expected = new float[delta.length];
        for (int j = 0; j < delta.length; j++) {
            expected[j] = random.nextDouble() < probability[j] ? delta[j] : 0;
        }
        float[] kept = delta.clone();
        DareMask.dropRanked(kept, 3, 0.5, 0.4, 9, 1, "w");
        assertArrayEquals(expected, kept);
        float[] flat = delta.clone();
        DareMask.dropRanked(flat, 3, 0.5, 0, 9, 1, "w");
        float[] dare = delta.clone();
        DareMask.drop(dare, 0.5, 9, 1, "w");
        assertArrayEquals(dare, flat, "epsilon 0 is DARE's drop");
    }

    /**
     * Model Stock on task vectors (1, 0) and (1, 1) from base 0: cos = 1 / sqrt 2, t = 2 cos / (1 + cos), out = t times
     * the models' mean (1, 0.5); orthogonal task vectors give t = 0 (the base), equal ones t = 1 (their mean). With
     * filter_wise each row of a [2, 2] tensor has its own t.
     */
    @Test
    void modelStockInterpolatesByTheAngleBetweenTaskVectors() {
        double cos = 1 / Math.sqrt(2);
        double t = 2 * cos / (1 + cos);
        assertArrayEquals(new float[] {(float) t, (float) (t / 2)},
                new ModelStock(false).merge("w", new float[2], of(new float[] {1, 0}, new float[] {1, 1})), 1e-6f);
        assertArrayEquals(new float[] {3, 4},
                new ModelStock(false).merge("w", new float[] {3, 4}, of(new float[] {4, 4}, new float[] {3, 5})), 1e-6f);
        assertArrayEquals(new float[] {1, 1},
                new ModelStock(false).merge("w", new float[2], of(new float[] {1, 1}, new float[] {1, 1})), 1e-6f);
        // rows (0, 0) -> (1, 0) and (1, 1): as above; rows (0, 0) -> (1, 0) and (0, 1): orthogonal, the base
        float[] rows = new ModelStock(true).merge("w", new long[] {2, 2}, new float[4],
                of(new float[] {1, 0, 1, 0}, new float[] {1, 1, 0, 1}));
        assertArrayEquals(new float[] {(float) t, (float) (t / 2), 0, 0}, rows, 1e-6f);
    }

    /** ties takes rescale as mergekit does: (1, -2, 3, -4) trimmed to (0, 0, 3, -4), times 10 / 7. */
    @Test
    void tiesRescalesToTheL1NormWhenAsked() {
        float[] merged = new TaskArithmetic(MergeMethod.TIES, new double[] {1}, new double[] {0.5}, true, 1, true, 0)
                .merge("w", new float[4], of(new float[] {1, -2, 3, -4}));
        assertArrayEquals(new float[] {0, 0, 30 / 7f, -40 / 7f}, merged, 1e-6f);
    }

    @Test
    void slerpFollowsTheArcAndFallsBackToLerpWhenColinear() {
        float[] x0 = {1, 0};
        float[] x1 = {0, 2};
        // theta = 90 degrees; at t = 0.5 both weights are sin(45)/sin(90) = 0.7071.
        float[] mid = new Slerp(0.5).merge("w", null, of(x0, x1));
        assertArrayEquals(new float[] {0.70710677f, 1.4142135f}, mid, 1e-6f);
        float[] colinear = new Slerp(0.25).merge("w", null, of(new float[] {1, 1}, new float[] {3, 3.001f}));
        assertArrayEquals(new float[] {1.5f, 1.50025f}, colinear, 1e-6f);
        assertArrayEquals(new float[] {1, 0}, new Slerp(0).merge("w", null, of(x0, x1)), 1e-7f);
        assertArrayEquals(new float[] {0, 2}, new Slerp(1).merge("w", null, of(x0, x1)), 1e-6f);
    }

    /**
     * nearswap: |m - base| 0.5 with t 0.1 moves a fifth of the way (w = 0.2), 0.05 is within t (w = 1); nuslerp: x0 = e1,
     * x1 = e2 at t = 1 / 3 give (cos 30, sin 30), weights summing to 0 give t = 0.5, colinear ones lerp; multislerp:
     * antipodal pairs fall back to the weighted sum, three that balance are refused (mergekit's rules).
     */
    @Test
    void nearswapNuslerpAndMultislerpOnHandValues() {
        assertArrayEquals(new float[] {0.1f, 0.05f, 1f},
                new NearSwap(0.1).merge("w", new float[] {0, 0, 1}, of(new float[] {0.5f, 0.05f, 1})), 1e-7f);
        float[] quarter = new NuSlerp(2, 1, true, false).merge("w", null, of(new float[] {1, 0}, new float[] {0, 1}));
        assertArrayEquals(new float[] {(float) Math.cos(Math.PI / 6), 0.5f}, quarter, 1e-6f);
        float[] half = new NuSlerp(1, -1, true, false).merge("w", null, of(new float[] {2, 0}, new float[] {0, 2}));
        assertArrayEquals(new float[] {(float) Math.sqrt(2), (float) Math.sqrt(2)}, half, 1e-6f);
        float[] colinear = new NuSlerp(1, 1, true, false).merge("w", null, of(new float[] {1, 1}, new float[] {3, 3}));
        assertArrayEquals(new float[] {2, 2}, colinear, 1e-6f);
        // Rows (last dimension) of a [2, 2] tensor: row 0 e1 to e2, row 1 colinear; columns: column 0 (1, 0) to (0, 5).
        float[] rows = new NuSlerp(1, 1, false, false).merge("w", new long[] {2, 2}, null,
                of(new float[] {1, 0, 1, 1}, new float[] {0, 1, 3, 3}));
        double s = Math.sqrt(0.5);
        assertArrayEquals(new float[] {(float) s, (float) s, 2, 2}, rows, 1e-6f);
        float[] columns = new NuSlerp(1, 1, false, true).merge("w", new long[] {2, 2}, null,
                of(new float[] {1, 1, 0, 1}, new float[] {0, 3, 5, 3}));
        double c = Math.sin(Math.PI / 4) / Math.sin(Math.PI / 2);
        assertArrayEquals(new float[] {(float) c, 2, (float) (5 * c), 2}, columns, 1e-6f);
        float[] antipodal = new MultiSlerp(new double[] {1, 1}, true).merge("w", null,
                of(new float[] {1, 2}, new float[] {-1, -2}));
        assertArrayEquals(new float[] {0, 0}, antipodal, 1e-7f);
        IllegalArgumentException balanced = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> new MultiSlerp(new double[] {1, 1, 2}, true).merge("w", null,
                        of(new float[] {1, 0}, new float[] {1, 0}, new float[] {-1, 0})));
        assertTrue(balanced.getMessage().contains("'w'"), balanced.getMessage());
        // e1 (norm 2) and e2 (norm 4) at equal weights: the unit bisector times the mean norm 3.
        float[] bisector = new MultiSlerp(new double[] {1, 1}, true).merge("w", null,
                of(new float[] {2, 0}, new float[] {0, 4}));
        assertArrayEquals(new float[] {(float) (3 * s), (float) (3 * s)}, bisector, 1e-6f);
        // karcher: the mean of two unit vectors on the circle is their bisector, its norm the mean norm.
        float[] karcher = new Karcher(10, 1e-5).merge("w", null, of(new float[] {2, 0}, new float[] {0, 4}));
        assertArrayEquals(new float[] {(float) (3 * s), (float) (3 * s)}, karcher, 1e-6f);
    }

    /**
     * ram at epsilon 0.1 with task vectors (0.5, 0.5, 0.05) and (0.3, 0, 0): entry 0 is shared (mean 0.4), entry 1 is
     * model 0's alone (0.5), entry 2 counts for none (0). ramplus_tl with r 0.5, alpha 0.9: model 0 has 1 shared and 1
     * unique entry, rho 1 clamped to 0.9, so its unique entry is scaled by 1.45.
     */
    /**
     * sce on task vectors (1, 1, -2, 0.5) and (1, -1, 0, 0.5): variances (0, 1, 1, 0), so select_topk 0.5 keeps
     * int(2 * 0.5) = 1 entry, of the tied two the lower index (entry 1: sum 0 elects +, model 0's 1 alone); with every
     * entry kept, the elected signs give 1, 1 (+ at a zero sum), -2 and 0.5.
     */
    @Test
    void sceKeepsTheTopVarianceEntriesAndElectsSigns() {
        assertArrayEquals(new float[] {0, 1, 0, 0}, new Sce(0.5).merge("w", new float[4],
                of(new float[] {1, 1, -2, 0.5f}, new float[] {1, -1, 0, 0.5f})), 1e-6f);
        assertArrayEquals(new float[] {1, 1, -2, 0.5f}, new Sce(1).merge("w", new float[4],
                of(new float[] {1, 1, -2, 0.5f}, new float[] {1, -1, 0, 0.5f})), 1e-6f);
    }

    @Test
    void ramAveragesSharedEntriesAndRamplusScalesUniqueOnes() {
        List<float[]> deltas = of(new float[] {0.5f, 0.5f, 0.05f}, new float[] {0.3f, 0, 0});
        assertArrayEquals(new float[] {1.4f, 1.5f, 1}, new Ram(0.1, false, 0, 0).merge("w", new float[] {1, 1, 1},
                of(new float[] {1.5f, 1.5f, 1.05f}, new float[] {1.3f, 1, 1})), 1e-6f);
        assertArrayEquals(new float[] {0.4f, 0.725f, 0}, new Ram(0.1, true, 0.5, 0.9).merge("w", new float[3], deltas),
                1e-6f);
    }

    /**
     * TensorMerge's contract, no tensor-sized scratch beyond the inputs, for the methods that rank every entry:
     * arcee_fusion's quantiles of the importance and sce's top variances are radix-selected, not sorted from a copy.
     * They allocated two double arrays of the tensor (8 MB here, 2.1 GB for a 7B model's embeddings).
     */
    @Test
    void rankingMergesAllocateNoTensorSizedScratch() {
        int length = 1 << 19;
        SplittableRandom random = new SplittableRandom(7);
        float[] base = new float[length];
        float[] a = new float[length];
        float[] b = new float[length];
        for (int j = 0; j < length; j++) {
            base[j] = (float) random.nextGaussian();
            a[j] = base[j] + (float) random.nextGaussian() * 0.1f;
            b[j] = base[j] + (float) random.nextGaussian() * 0.1f;
        }
        long arcee = allocatedBy(() -> new ArceeFusion().merge("w", new long[] {512, 1024}, base.clone(),
                new ArrayList<>(List.of(a.clone()))));
        long sce = allocatedBy(() -> new Sce(0.3).merge("w", new long[] {length}, base.clone(),
                new ArrayList<>(List.of(a.clone(), b.clone()))));
        long tensor = 4L * length; // each clone made inside the measured calls
        assertTrue(arcee - 2 * tensor < 2_000_000, "arcee_fusion allocated " + (arcee - 2 * tensor)
                + " bytes of scratch");
        assertTrue(sce - 3 * tensor < 2_000_000, "sce allocated " + (sce - 3 * tensor) + " bytes of scratch");
    }

    /** della's ranked drop draws row by row: one row of keep probabilities, not a double per entry of the tensor. */
    @Test
    void dellaDropAllocatesOneRowOfScratch() {
        float[] delta = new float[1 << 19];
        SplittableRandom random = new SplittableRandom(3);
        for (int j = 0; j < delta.length; j++) {
            delta[j] = (float) random.nextGaussian();
        }
        long allocated = allocatedBy(() -> DareMask.dropRanked(delta, 1024, 0.5, 0.1, 11, 0, "w"));
        assertTrue(allocated < 200_000, "della's drop allocated " + allocated + " bytes");
    }

    private static long allocatedBy(Runnable merge) {
        com.sun.management.ThreadMXBean threads =
                (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
        long before = threads.getCurrentThreadAllocatedBytes();
        merge.run();
        return threads.getCurrentThreadAllocatedBytes() - before;
    }
}
