package io.mixtune.bench;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import io.mixtune.lora.nf4.Nf4DeviceTensor;
import io.mixtune.lora.nf4.Nf4Linear;
import io.mixtune.lora.nf4.Nf4Tensor;
import java.util.Locale;
import java.util.Random;

/**
 * NF4 dequantization on the CPU, the two ways Nf4Linear can do it, through Nf4Linear.dequantizedWeight as the forward
 * pass calls it: the codes on the Java heap dequantized in Java and copied into libtorch, or the codes in libtorch
 * dequantized with libtorch ops. Shapes: tiny-mixtral's expert and attention weights, mistral-1b's MLP weight.
 * Usage: Nf4DequantizeBenchmark [repeats]. Prints ms per dequantization and the ratio.
 */
public final class Nf4DequantizeBenchmark {
    public static void main(String[] args) {
        int repeats = args.length > 0 ? Integer.parseInt(args[0]) : 50;
        long[][] shapes = {{128, 64}, {64, 64}, {32, 64}, {5632, 2048}, {2048, 2048}};
        System.out.printf(Locale.ROOT, "%-12s %12s %14s %8s   (intra-op threads: %s)%n", "shape", "java ms",
                "libtorch ms", "ratio", System.getenv().getOrDefault("OMP_NUM_THREADS", "libtorch default"));
        try (NDManager manager = NDManager.newBaseManager(Device.cpu())) { // DJL defaults to a GPU when there is one
            Nf4DeviceTensor.Codebooks codebooks = new Nf4DeviceTensor.Codebooks(manager);
            for (long[] shape : shapes) {
                Nf4Tensor weight = Nf4Tensor.quantize(random(shape[0] * shape[1]), shape, true);
                int times = shape[0] * shape[1] > 1_000_000 ? repeats : repeats * 20;
                double java = secondsPerDequantize(new Nf4Linear(weight), manager, times);
                double torch = secondsPerDequantize(new Nf4Linear(Nf4DeviceTensor.upload(weight, codebooks, manager)),
                        manager, times);
                System.out.printf(Locale.ROOT, "%-12s %12.3f %14.3f %8.2f%n", shape[0] + "x" + shape[1], java * 1e3,
                        torch * 1e3, java / torch);
            }
        }
    }

    /** Seconds per dequantizedWeight(fp32), after a warm-up of a third as many calls. */
    static double secondsPerDequantize(Nf4Linear linear, NDManager manager, int repeats) {
        for (int i = 0; i < Math.max(3, repeats / 3); i++) {
            try (NDManager step = manager.newSubManager()) {
                linear.dequantizedWeight(step, DataType.FLOAT32);
            }
        }
        long start = System.nanoTime();
        for (int i = 0; i < repeats; i++) {
            try (NDManager step = manager.newSubManager()) {
                NDArray weight = linear.dequantizedWeight(step, DataType.FLOAT32);
                weight.getShape(); // the result exists when the call returns (libtorch on a CPU runs eagerly)
            }
        }
        return (System.nanoTime() - start) / 1e9 / repeats;
    }

    private static float[] random(long count) {
        Random random = new Random(7);
        float[] values = new float[Math.toIntExact(count)];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) random.nextGaussian() * 0.02f;
        }
        return values;
    }
}
