package io.mixtune.bench;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.jni.JniUtils;
import ai.djl.training.GradientCollector;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.GradientClipping;
import io.mixtune.trainer.optim.LossScaler;
import io.mixtune.trainer.optim.OptimizerUpdate;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Random;

/**
 * The end of an SFT step alone: unscale + clip + AdamW ({@link OptimizerUpdate}) and zeroing the gradients, on the
 * adapter arrays of a 4-layer hidden-256 Mixtral (SizeSweepBenchmark's mixtral-256-4: head_dim 64, 4 heads, 1
 * key-value head, intermediate 896, 8 experts) with LoRA r 16 on q, k, v, o and every expert's w1, w2, w3: 224 arrays,
 * 1.88 M parameters. Process CPU time per step (a mean: the process clock ticks in 10 ms here) with one libtorch
 * thread, and one step's operator calls under libtorch's profiler. Gradients are random, set by an untimed backward
 * before each step; weight decay 0.01, clipping at 1.0.
 *
 * <p>Usage: {@code OptimizerBenchmark [steps] [trace.json]}
 */
public final class OptimizerBenchmark {
    private static final int HIDDEN = 256;
    private static final int LAYERS = 4;
    private static final int KV = 64;
    private static final int INTERMEDIATE = 896;
    private static final int EXPERTS = 8;
    private static final int RANK = 16;

    private OptimizerBenchmark() {}

    public static void main(String[] args) throws Exception {
        int steps = args.length > 0 ? Integer.parseInt(args[0]) : 50;
        Path trace = args.length > 1 ? Path.of(args[1]) : Files.createTempFile("optimizer-trace", ".json");
        Engine.getInstance();
        JniUtils.setNumThreads(1);
        try (NDManager manager = NDManager.newBaseManager()) {
            List<NDArray> parameters = new ArrayList<>();
            Random random = new Random(1);
            for (int layer = 0; layer < LAYERS; layer++) {
                for (int out : new int[] {HIDDEN, KV, KV, HIDDEN}) { // q, k, v, o
                    adapter(manager, parameters, random, HIDDEN, out);
                }
                for (int expert = 0; expert < EXPERTS; expert++) {
                    adapter(manager, parameters, random, HIDDEN, INTERMEDIATE); // w1
                    adapter(manager, parameters, random, INTERMEDIATE, HIDDEN); // w2
                    adapter(manager, parameters, random, HIDDEN, INTERMEDIATE); // w3
                }
            }
            long elements = parameters.stream().mapToLong(NDArray::size).sum();
            AdamW optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0.01);
            LossScaler scaler = LossScaler.off();
            int warmup = 3;
            long cpuNanos = 0;
            for (int step = 0; step < warmup + steps; step++) {
                setGradients(parameters, manager, step);
                long start = SftBenchmark.processCpuNanos();
                update(parameters, optimizer, scaler);
                if (step >= warmup) {
                    cpuNanos += SftBenchmark.processCpuNanos() - start;
                }
            }
            setGradients(parameters, manager, -1);
            OpProfile.record(trace, () -> update(parameters, optimizer, scaler));
            System.out.printf(Locale.ROOT, "clip + AdamW + zero, %d adapter arrays (%d parameters), one thread: "
                    + "%.2f ms of process CPU per step (mean of %d steps), load average %s%n", parameters.size(),
                    elements, cpuNanos / 1e6 / steps, steps, SftBenchmark.loadAverage());
            OpProfile.summarise(trace, "clip + AdamW + zero", 12);
        }
    }

    private static void update(List<NDArray> parameters, AdamW optimizer, LossScaler scaler) {
        OptimizerUpdate.apply(1.0, 1.0, optimizer, 1e-4, scaler);
        GradientClipping.zero(parameters);
    }

    /** LoRA's A [r, in] and B [out, r]. */
    private static void adapter(NDManager manager, List<NDArray> parameters, Random random, int in, int out) {
        for (Shape shape : List.of(new Shape(RANK, in), new Shape(out, RANK))) {
            float[] values = new float[(int) shape.size()];
            for (int i = 0; i < values.length; i++) {
                values[i] = (float) (random.nextGaussian() * 0.02);
            }
            NDArray parameter = manager.create(values, shape);
            parameter.setRequiresGradient(true);
            parameters.add(parameter);
        }
    }

    /** Gradients r of sum(p * r) for random r (the parameters' gradients were zeroed by the last update). */
    private static void setGradients(List<NDArray> parameters, NDManager manager, long seed) {
        try (NDManager scratch = manager.newSubManager();
                GradientCollector collector = Engine.getInstance().newGradientCollector()) {
            NDArray total = null;
            for (NDArray parameter : parameters) {
                NDArray r = scratch.randomNormal(0, 0.1f, parameter.getShape(), parameter.getDataType());
                NDArray term = parameter.mul(r).sum();
                total = total == null ? term : total.add(term);
            }
            collector.backward(total);
        }
    }
}
