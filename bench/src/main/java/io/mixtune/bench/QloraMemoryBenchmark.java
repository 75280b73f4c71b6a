package io.mixtune.bench;

import ai.djl.ndarray.NDManager;
import io.mixtune.lora.nf4.Nf4Linear;
import io.mixtune.lora.nf4.Nf4Loading;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.DType;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Loading a model in NF4: peak resident memory, bytes per parameter of the quantized layers, dequantization speed, and
 * the same arithmetic for Mixtral-8x7B from its preset. Usage: QloraMemoryBenchmark CHECKPOINT_DIR [preset]; writes a
 * random bf16 checkpoint there first when the directory has none.
 */
public final class QloraMemoryBenchmark {
    public static void main(String[] args) throws IOException {
        Path dir = Path.of(args.length > 0 ? args[0] : "target/bench-mistral-1b");
        String preset = args.length > 1 ? args[1] : "mistral-1b";
        if (!Files.exists(dir.resolve("config.json"))) {
            long start = System.nanoTime();
            RandomCheckpoint.write(ModelPreset.load(preset), dir, 0, DType.BF16, RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES);
            System.out.printf(Locale.ROOT, "wrote a random %s checkpoint in %.0f s%n", preset, (System.nanoTime() - start) / 1e9);
        }
        ModelConfig config = ModelConfig.read(dir.resolve("config.json"));
        long checkpointBytes = 0;
        try (var files = Files.list(dir)) {
            for (Path file : files.filter(f -> f.toString().endsWith(".safetensors")).toList()) {
                checkpointBytes += Files.size(file);
            }
        }
        long rssBefore = status("VmRSS");
        long start = System.nanoTime();
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(dir, manager, Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION))) {
            double seconds = (System.nanoTime() - start) / 1e9;
            System.gc();
            List<Nf4Linear> quantized = new ArrayList<>();
            model.replaceLinears((name, linear) -> {
                if (linear instanceof Nf4Linear nf4) {
                    quantized.add(nf4);
                }
                return linear;
            });
            long quantizedParameters = quantized.stream().mapToLong(Nf4Linear::count).sum();
            long quantizedBytes = quantized.stream().mapToLong(Nf4Linear::storageBytes).sum();
            long fullPrecisionParameters = config.parameterCount() - quantizedParameters;
            System.out.printf(Locale.ROOT, "%s: %,d parameters, %.2f GB bf16 on disk, loaded in NF4 in %.1f s%n", preset,
                    config.parameterCount(), checkpointBytes / 1e9, seconds);
            System.out.printf(Locale.ROOT, "  quantized layers: %,d parameters in %.3f GB = %.4f bytes/parameter "
                    + "(goal <= 0.52)%n", quantizedParameters, quantizedBytes / 1e9, (double) quantizedBytes / quantizedParameters);
            System.out.printf(Locale.ROOT, "  kept in fp32 (embeddings, lm_head, norms, router): %,d parameters = %.3f GB%n",
                    fullPrecisionParameters, fullPrecisionParameters * 4 / 1e9);
            System.out.printf(Locale.ROOT, "  resident memory: %.2f GB before loading, peak %.2f GB, %.2f GB after, of "
                    + "which %.2f GB anonymous (heap and native arrays) and %.2f GB pages of the memory-mapped checkpoint "
                    + "(page cache, reclaimable); JVM heap in use %.2f GB. The model in fp32 would be %.2f GB%n",
                    rssBefore / 1e9, status("VmHWM") / 1e9, status("VmRSS") / 1e9, status("RssAnon") / 1e9,
                    status("RssFile") / 1e9, (Runtime.getRuntime().totalMemory() - Runtime.getRuntime().freeMemory()) / 1e9,
                    config.parameterCount() * 4 / 1e9);

            Nf4Linear largest = quantized.stream().max((x, y) -> Integer.compare(x.count(), y.count())).orElseThrow();
            double dequantSeconds = Nf4DequantizeBenchmark.secondsPerDequantize(largest, manager, 20);
            System.out.printf(Locale.ROOT, "  dequantize [%d, %d] with libtorch ops: %.1f ms, %.2f G params/s, %.2f GB/s "
                    + "of fp32 written (%.2f GB/s NF4 read)%n", largest.outFeatures(), largest.inFeatures(),
                    dequantSeconds * 1e3, largest.count() / dequantSeconds / 1e9, largest.count() * 4.0 / dequantSeconds / 1e9,
                    largest.storageBytes() / dequantSeconds / 1e9);
        }
        estimate(ModelPreset.load("mixtral-8x7b"), "mixtral-8x7b");
        estimate(ModelPreset.load("mistral-7b"), "mistral-7b");
    }

    /**
     * Weight memory on a GPU in fp16 compute, from the shapes alone: NF4 (double quantized) for the attention and MLP
     * layers, float32 for the embeddings and norms (PEFT's QLoRA layout), fp16 for the rest (lm_head, routers).
     */
    static void estimate(ModelConfig c, String name) {
        long h = c.hiddenSize();
        long attention = h * c.numAttentionHeads() * c.headDim() * 2 + h * c.numKeyValueHeads() * c.headDim() * 2;
        long mlp = 3 * h * c.intermediateSize() * (c.isMixtureOfExperts() ? c.numLocalExperts() : 1);
        long quantized = c.numHiddenLayers() * (attention + mlp);
        long embeddingsAndNorms = (long) c.vocabSize() * h + (2L * c.numHiddenLayers() + 1) * h;
        long rest = c.parameterCount() - quantized - embeddingsAndNorms;
        double bytesPerQuantized = 0.5 + 1.0 / 64 + 4.0 / (64 * 256); // 4-bit codes, 8-bit absmax, fp32 scale per 256
        double gigabytes = (quantized * bytesPerQuantized + embeddingsAndNorms * 4 + rest * 2) / 1e9;
        System.out.printf(Locale.ROOT, "estimate %s: %.1fB parameters, %.1fB in NF4 at %.4f bytes each + %.2fB in fp32 "
                + "+ %.2fB in fp16 = %.1f GB of weights (bf16: %.1f GB)%n", name, c.parameterCount() / 1e9,
                quantized / 1e9, bytesPerQuantized, embeddingsAndNorms / 1e9, rest / 1e9, gigabytes,
                c.parameterCount() * 2 / 1e9);
    }

    /** A field of /proc/self/status, in bytes. */
    static long status(String field) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith(field + ":")) {
                return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
            }
        }
        return -1;
    }
}
