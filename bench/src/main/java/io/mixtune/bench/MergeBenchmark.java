package io.mixtune.bench;

import io.mixtune.merging.MergeConfig;
import io.mixtune.merging.MergeMethod;
import io.mixtune.merging.MergeReport;
import io.mixtune.merging.ModelMerge;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;

/**
 * Merging three checkpoints of a preset (default mistral-1b, bf16): peak resident memory over the JVM's own and
 * tensors per second. Usage: MergeBenchmark WORK_DIR [preset] [method ...]; writes the random checkpoints c0, c1, c2
 * into WORK_DIR first when missing (about 2.25 GB each for mistral-1b). linear averages c0, c1, c2; ties merges c1 and
 * c2 onto c0 as base (density 0.5), which reads three inputs too and does the most work per element. The peak is
 * measured from just before the merge (VmHWM reset through /proc/self/clear_refs), so writing the inputs does not count.
 */
public final class MergeBenchmark {
    public static void main(String[] args) throws Exception {
        Path work = Path.of(args.length > 0 ? args[0] : "/tmp/mixtune-merge-bench");
        String preset = args.length > 1 ? args[1] : "mistral-1b";
        List<String> methods = args.length > 2 ? List.of(args).subList(2, args.length) : List.of("linear", "ties");
        List<Path> inputs = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            Path dir = work.resolve("c" + i);
            if (!Files.exists(dir.resolve("config.json"))) {
                long start = System.nanoTime();
                RandomCheckpoint.write(ModelPreset.load(preset), dir, i + 1, DType.BF16,
                        RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES);
                System.out.printf(Locale.ROOT, "wrote random %s checkpoint %s in %.0f s%n", preset, dir,
                        (System.nanoTime() - start) / 1e9);
            }
            inputs.add(dir);
        }
        long largest;
        long totalElements = 0;
        int tensors;
        try (SafetensorsReader reader = SafetensorsReader.open(inputs.get(0))) {
            largest = reader.names().stream().mapToLong(n -> reader.info(n).numel()).max().orElseThrow();
            for (String name : reader.names()) {
                totalElements += reader.info(name).numel();
            }
            tensors = reader.names().size();
        }
        double tensorGb = largest * 4 / 1e9;
        System.out.printf(Locale.ROOT, "%s: %d tensors, %,d parameters; largest tensor %,d elements = %.3f GB in fp32"
                + " (%.3f GB bf16)%n", preset, tensors, totalElements, largest, tensorGb, largest * 2 / 1e9);
        for (String method : methods) {
            run(MergeMethod.parse(method), inputs, work.resolve("out-" + method), tensorGb, totalElements);
        }
    }

    private static void run(MergeMethod method, List<Path> inputs, Path out, double tensorGb, long elements)
            throws Exception {
        MergeConfig config = method == MergeMethod.TIES
                ? new MergeConfig(method, inputs.get(0), MergeConfig.models(inputs.subList(1, 3), null),
                        new MergeConfig.Parameters(null, 0.5, null, null, null, null, null, null), null, null, null,
                        null, out)
                : new MergeConfig(method, null, MergeConfig.models(inputs, null), null, null, null, null, null, out);
        System.gc();
        Files.writeString(Path.of("/proc/self/clear_refs"), "5");
        long base = QloraMemoryBenchmark.status("VmRSS");
        AtomicLong peakAnon = new AtomicLong();
        AtomicLong peakFile = new AtomicLong();
        Thread sampler = new Thread(() -> {
            while (!Thread.currentThread().isInterrupted()) {
                try {
                    peakAnon.accumulateAndGet(QloraMemoryBenchmark.status("RssAnon"), Math::max);
                    peakFile.accumulateAndGet(QloraMemoryBenchmark.status("RssFile"), Math::max);
                    Thread.sleep(20);
                } catch (IOException | InterruptedException e) {
                    return;
                }
            }
        });
        sampler.setDaemon(true);
        sampler.start();
        MergeReport report = ModelMerge.run(config, true, RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES);
        sampler.interrupt();
        long peak = QloraMemoryBenchmark.status("VmHWM");
        Runtime jvm = Runtime.getRuntime();
        double over = (peak - base) / 1e9;
        System.out.printf(Locale.ROOT, "%s of 3 inputs: %.1f s, %.1f tensors/s, %.0f M parameters/s per input%n",
                method.yamlName(), report.seconds(), report.tensors() / report.seconds(),
                elements / report.seconds() / 1e6);
        System.out.printf(Locale.ROOT, "  resident memory: %.2f GB before, peak %.2f GB, %.2f GB over the base ="
                + " %.2f largest fp32 tensors per input (goal < 2); sampled peaks: anonymous %.2f GB, file-backed"
                + " (mapped checkpoint pages) %.2f GB; JVM heap limit %.1f GB%n", base / 1e9, peak / 1e9, over,
                over / tensorGb / 3, peakAnon.get() / 1e9, peakFile.get() / 1e9, jvm.maxMemory() / 1e9);
        deleteRecursively(out);
    }

    private static void deleteRecursively(Path dir) throws IOException {
        try (Stream<Path> walk = Files.walk(dir)) {
            for (Path path : walk.sorted(Comparator.reverseOrder()).toList()) {
                Files.delete(path);
            }
        }
    }
}
