package io.mixtune.model.checkpoint;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Writes a Hugging Face checkpoint with random weights: normal(0, 0.02) for linear and embedding weights and ones for
 * norms, as transformers initialises these models. Each tensor draws from its own generator seeded by the run's seed
 * and the tensor's name, and is written as soon as it is made, so memory holds one tensor however big the model.
 */
public final class RandomCheckpoint {
    static final double INITIALIZER_RANGE = 0.02;
    /** transformers' default max_shard_size. */
    public static final long DEFAULT_MAX_SHARD_BYTES = 5_000_000_000L;

    private RandomCheckpoint() {}

    public static List<Path> write(ModelConfig config, Path outDir, long seed, DType dtype, long maxShardBytes) {
        return write(config, outDir, seed, dtype, maxShardBytes, INITIALIZER_RANGE);
    }

    /**
     * @param std standard deviation of the linear and embedding weights; tests that must see attention and routing
     *     matter use a larger one, since at 0.02 a tiny model's output depends on little but the last token
     */
    public static List<Path> write(ModelConfig config, Path outDir, long seed, DType dtype, long maxShardBytes,
            double std) {
        List<TensorSpec> specs = new ArrayList<>();
        for (Map.Entry<String, long[]> tensor : MistralCheckpoint.WeightLayout.HUB.expectedShapes(config).entrySet()) {
            specs.add(new TensorSpec(tensor.getKey(), dtype, tensor.getValue()));
        }
        try {
            Files.createDirectories(outDir);
            List<Path> files = SafetensorsWriter.writeCheckpoint(outDir, specs, maxShardBytes, spec -> values(spec, seed, std));
            String torchDtype = ModelConfig.torchDtypeName(dtype);
            new ObjectMapper().writerWithDefaultPrettyPrinter()
                    .writeValue(outDir.resolve("config.json").toFile(), config.toJson(torchDtype));
            return files;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write the checkpoint to " + outDir + ": " + e.getMessage(), e);
        }
    }

    private static float[] values(TensorSpec spec, long seed, double std) {
        float[] values = new float[Math.toIntExact(spec.numel())];
        if (spec.name().endsWith("norm.weight")) {
            Arrays.fill(values, 1f);
            return values;
        }
        SplittableRandom random = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + spec.name().hashCode());
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (random.nextGaussian() * std);
        }
        return values;
    }
}
