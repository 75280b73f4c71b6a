package io.mixtune.bench;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import io.mixtune.lora.adapter.LoraInit;
import io.mixtune.lora.init.LowRankSvd;
import io.mixtune.lora.init.MutatedInit;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * Seconds per weight of PiSSA's and OLoRA's starts at Mistral-7B's shapes (4096x4096, 14336x4096, 4096x14336; r 16),
 * and how close the subspace iteration that "pissa" runs above {@link LowRankSvd#EXACT_MAX_DIM} comes to the exact
 * SVD at 1024 x 1024. The weights are synthetic with a power-law spectrum (s_k ~ k^-0.5 over 256 directions plus
 * N(0, 0.0005^2) noise), which is what trained projections look like; a flat spectrum (pure noise) is the worst case for subspace
 * iteration and is timed too. Usage: LoraInitBenchmark [cpu|gpu] [r]
 */
public final class LoraInitBenchmark {
    private LoraInitBenchmark() {}

    public static void main(String[] args) {
        Device device = args.length > 0 && args[0].equals("gpu") ? Device.gpu() : Device.cpu();
        int r = args.length > 1 ? Integer.parseInt(args[1]) : 16;
        try (NDManager manager = NDManager.newBaseManager(device)) {
            System.out.printf(Locale.ROOT, "device %s, r %d%n", device, r);
            accuracy(manager, 256, r);
            accuracy(manager, 512, r);
            for (int[] shape : new int[][] {{4096, 4096}, {14336, 4096}, {4096, 14336}}) {
                float[] w = powerLaw(manager, shape[0], shape[1], 17);
                time(manager, "olora", w, shape, r);
                time(manager, "pissa_niter_4", w, shape, r);
                time(manager, "pissa", w, shape, r);
            }
            float[] noise = powerLaw(manager, 4096, 4096, 0);
            time(manager, "pissa (flat spectrum)", noise, new int[] {4096, 4096}, r);
        }
    }

    private static void time(NDManager manager, String label, float[] w, int[] shape, int r) {
        LoraInit init = LoraInit.parse(label.split(" ")[0]);
        long start = System.nanoTime();
        MutatedInit.Factors f;
        try {
            f = MutatedInit.factors(init, w, shape[0], shape[1], r, 1.0, new SplittableRandom(1), manager);
        } catch (IllegalArgumentException e) {
            // pissa refuses a subspace iteration that does not settle (a flat spectrum): the time it took to say so
            System.out.printf(Locale.ROOT, "%-22s %5d x %-5d  refused after %7.2f s: %s%n", label, shape[0], shape[1],
                    (System.nanoTime() - start) / 1e9, e.getMessage());
            return;
        }
        double factors = (System.nanoTime() - start) / 1e9;
        MutatedInit.residual(w, shape[0], shape[1], f, 1.0, manager);
        double total = (System.nanoTime() - start) / 1e9;
        System.out.printf(Locale.ROOT, "%-22s %5d x %-5d  factors %7.2f s, with residual %7.2f s%n", label, shape[0],
                shape[1], factors, total);
    }

    /** Converged subspace iteration against the exact SVD: the relative error of the rank-r product. */
    private static void accuracy(NDManager manager, int n, int r) {
        float[] w = powerLaw(manager, n, n, 5);
        long start = System.nanoTime();
        LowRankSvd.Triplets exact = LowRankSvd.exact(w, n, n, r);
        double exactSeconds = (System.nanoTime() - start) / 1e9;
        start = System.nanoTime();
        LowRankSvd.Triplets iterated;
        try (NDManager scratch = manager.newSubManager()) {
            iterated = LowRankSvd.converged(scratch.create(w, new Shape(n, n)), r, new SplittableRandom(1));
        }
        double iteratedSeconds = (System.nanoTime() - start) / 1e9;
        double diff = 0;
        double norm = 0;
        for (int i = 0; i < n; i++) {
            for (int c = 0; c < n; c++) {
                double want = 0;
                double got = 0;
                for (int j = 0; j < r; j++) {
                    want += exact.u()[j][i] * exact.s()[j] * exact.v()[j][c];
                    got += iterated.u()[j][i] * iterated.s()[j] * iterated.v()[j][c];
                }
                diff += (want - got) * (want - got);
                norm += want * want;
            }
        }
        System.out.printf(Locale.ROOT, "%d x %d: exact SVD (commons-math3) %.2f s, converged subspace iteration %.2f s,"
                + " ||U_r S_r V_r^T - exact|| / ||exact|| = %.2e, s_r %.4f vs %.4f%n", n, n, exactSeconds,
                iteratedSeconds, Math.sqrt(diff / norm), iterated.s()[r - 1], exact.s()[r - 1]);
    }

    /** sum_k k^-0.5 u_k v_k^T over {@code directions} random directions, plus N(0, 0.0005^2) noise. */
    private static float[] powerLaw(NDManager manager, int m, int n, int seed) {
        int directions = 256;
        try (NDManager scratch = manager.newSubManager()) {
            ai.djl.engine.Engine.getInstance().setRandomSeed(seed);
            NDArray noise = scratch.randomNormal(0, 0.0005f, new Shape(m, n), ai.djl.ndarray.types.DataType.FLOAT32);
            if (seed == 0) {
                return noise.toFloatArray();
            }
            NDArray u = scratch.randomNormal(new Shape(m, directions)).div(Math.sqrt(m));
            NDArray v = scratch.randomNormal(new Shape(directions, n)).div(Math.sqrt(n));
            NDArray s = scratch.arange(1, directions + 1).toType(ai.djl.ndarray.types.DataType.FLOAT32, false)
                    .pow(-0.5).reshape(directions, 1);
            return u.matMul(v.mul(s)).add(noise).toFloatArray();
        }
    }
}
