package io.mixtune.bench;

import io.mixtune.merging.gguf.GgmlType;
import io.mixtune.merging.gguf.GgufEncoder;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.List;
import java.util.Locale;
import java.util.Random;

/**
 * GGUF encoding throughput (export-gguf's quantizers, through {@link GgufEncoder} as GgufWriter drives it: slices of
 * 2^20 values) on a synthetic tensor of Gaussian weights (std 0.02, seeded), per ggml type, on 1 thread and on N.
 * Usage: GgufEncodeBenchmark [threads, default the available processors] [million values, default 8] [repeats, 3]
 * [types, comma-separated, default all]. Prints M values/s of wall time (best of the repeats after a warm-up), and per
 * second of CPU time (one thread: the calling thread's; N: all the JVM's threads', the pool's among them), which a
 * busy machine's other processes do not take from: N threads' figure near one thread's means the split costs
 * nothing, and N idle cores would give N times the wall rate. Checks that N threads give the same bytes as one.
 */
public final class GgufEncodeBenchmark {
    private static final int SLICE = 1 << 20;

    public static void main(String[] args) {
        int threads = args.length > 0 ? Integer.parseInt(args[0]) : GgufEncoder.defaultThreads();
        int values = (int) (args.length > 1 ? Double.parseDouble(args[1]) * 1e6 : 8e6) / (1 << 16) * (1 << 16);
        int repeats = args.length > 2 ? Integer.parseInt(args[2]) : 3;
        List<GgmlType> types = args.length > 3
                ? java.util.Arrays.stream(args[3].split(",")).map(t -> GgmlType.parse("type", t)).toList()
                : List.of(GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1,
                        GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K);
        float[] tensor = new float[values];
        Random random = new Random(7);
        for (int i = 0; i < values; i++) {
            tensor[i] = (float) random.nextGaussian() * 0.02f;
        }
        System.out.printf(Locale.ROOT, "%d values, %d processors, load average %s; best of %d%n", values,
                Runtime.getRuntime().availableProcessors(), loadAverage(), repeats);
        System.out.printf(Locale.ROOT, "%-6s %13s %13s %13s %13s %8s%n", "type", "1 thr M/s", "1 thr M/cpu-s",
                threads + " thr M/s", threads + " thr M/cpu-s", "speedup");
        for (GgmlType type : types) {
            byte[] one = new byte[Math.toIntExact(type.bytes(values))];
            byte[] many = new byte[one.length];
            double[] single = rate(tensor, type, 1, one, repeats);
            double[] multi = rate(tensor, type, threads, many, repeats);
            if (!java.util.Arrays.equals(one, many)) {
                throw new IllegalStateException(type + ": " + threads + " threads gave other bytes than one");
            }
            System.out.printf(Locale.ROOT, "%-6s %13.1f %13.1f %13.1f %13.1f %8.2f%n", type, single[0], single[1],
                    multi[0], multi[1], multi[0] / single[0]);
        }
    }

    /**
     * M values/s of wall time and of CPU time (one thread: the calling thread's; more: the sum of every live JVM
     * thread's, in nanoseconds: the process's CPU time counts in 10 ms ticks on Linux, a fifth of a fast type's run,
     * and the best of the repeats then picks the run the ticks undercounted most), each the best of {@code repeats}
     * encodings of the whole tensor after one warm-up.
     */
    private static double[] rate(float[] tensor, GgmlType type, int threads, byte[] result, int repeats) {
        java.lang.management.ThreadMXBean thread = java.lang.management.ManagementFactory.getThreadMXBean();
        // the pool's threads live as long as the encoder, so none ends between two readings
        java.util.function.LongSupplier cpu = threads == 1 ? thread::getCurrentThreadCpuTime
                : () -> java.util.Arrays.stream(thread.getAllThreadIds()).map(thread::getThreadCpuTime)
                        .filter(t -> t > 0).sum();
        ByteBuffer slice = ByteBuffer.allocate(Math.toIntExact(type.bytes(SLICE))).order(ByteOrder.LITTLE_ENDIAN);
        double best = 0;
        double bestCpu = 0;
        try (GgufEncoder encoder = new GgufEncoder(threads)) {
            for (int r = 0; r <= repeats; r++) {
                long start = System.nanoTime();
                long startCpu = cpu.getAsLong();
                int at = 0;
                for (int from = 0; from < tensor.length; from += SLICE) {
                    int count = Math.min(SLICE, tensor.length - from);
                    encoder.encode(tensor, from, count, type, slice.clear());
                    slice.flip();
                    int size = slice.remaining();
                    slice.get(result, at, size);
                    at += size;
                }
                double seconds = (System.nanoTime() - start) / 1e9;
                double cpuSeconds = (cpu.getAsLong() - startCpu) / 1e9;
                if (r > 0) {
                    best = Math.max(best, tensor.length / seconds / 1e6);
                    bestCpu = Math.max(bestCpu, tensor.length / cpuSeconds / 1e6);
                }
            }
        }
        return new double[] {best, bestCpu};
    }

    private static String loadAverage() {
        try {
            return java.nio.file.Files.readString(java.nio.file.Path.of("/proc/loadavg")).trim();
        } catch (java.io.IOException e) {
            return "unknown";
        }
    }
}
