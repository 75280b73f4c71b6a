package io.mixtune.bench;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.mistral.AttentionMask;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.DType;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * Forward tokens/s of a preset (default tiny-mixtral), batch x length, float32, logits for every position.
 * Usage: ForwardBenchmark CHECKPOINT_DIR [preset] [batch] [length] [iterations]. Writes the checkpoint there first
 * when the directory has none, so bench/forward.sh can run transformers on the very same weights.
 */
public final class ForwardBenchmark {
    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args.length > 0 ? args[0] : "target/bench-tiny-mixtral");
        String preset = args.length > 1 ? args[1] : "tiny-mixtral";
        int batch = args.length > 2 ? Integer.parseInt(args[2]) : 4;
        int length = args.length > 3 ? Integer.parseInt(args[3]) : 256;
        int iterations = args.length > 4 ? Integer.parseInt(args[4]) : 10;
        if (!Files.exists(dir.resolve("config.json"))) {
            RandomCheckpoint.write(ModelPreset.load(preset), dir, 0, DType.F32, RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES);
        }
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(dir, manager)) {
            ModelConfig config = model.config();
            SplittableRandom random = new SplittableRandom(0);
            long[][] ids = new long[batch][length];
            long[][] positions = new long[batch][length];
            for (int b = 0; b < batch; b++) {
                for (int t = 0; t < length; t++) {
                    ids[b][t] = random.nextInt(config.vocabSize());
                    positions[b][t] = t;
                }
            }
            double[] seconds = new double[iterations];
            double[] decoderSeconds = new double[iterations];
            for (int i = -2; i < iterations; i++) { // two warm-up passes
                try (NDManager step = manager.newSubManager()) {
                    NDArray inputIds = step.create(ids);
                    NDArray positionIds = step.create(positions);
                    long start = System.nanoTime();
                    NDArray logits = model.forward(inputIds, positionIds, null);
                    logits.get("0, 0, 0").getFloat(); // wait for the result
                    long end = System.nanoTime();
                    // The same pass without the lm_head, to show where the time goes.
                    NDArray mask = AttentionMask.forRows(step, batch, length, null, null, config.slidingWindow(),
                            DataType.FLOAT32);
                    long decoderStart = System.nanoTime();
                    model.hiddenStates(inputIds, positionIds, mask, null).states().get("0, 0, 0").getFloat();
                    long decoderEnd = System.nanoTime();
                    if (i >= 0) {
                        seconds[i] = (end - start) / 1e9;
                        decoderSeconds[i] = (decoderEnd - decoderStart) / 1e9;
                    }
                }
            }
            Arrays.sort(seconds);
            Arrays.sort(decoderSeconds);
            double median = seconds[iterations / 2];
            double decoderMedian = decoderSeconds[iterations / 2];
            System.out.printf(Locale.ROOT, "mixtune forward: %s batch %d x %d fp32: median %.1f ms, %.0f tokens/s "
                    + "(%d runs, best %.1f ms)%n", preset, batch, length, median * 1e3, batch * length / median,
                    iterations, seconds[0] * 1e3);
            double headFlops = 2.0 * batch * length * config.hiddenSize() * config.vocabSize();
            System.out.printf(Locale.ROOT, "  of which embedding + decoder layers + norm: median %.1f ms; lm_head and "
                    + "logits: %.1f ms (%.1f GFLOP, %.0f GFLOP/s)%n", decoderMedian * 1e3,
                    (median - decoderMedian) * 1e3, headFlops / 1e9, headFlops / (median - decoderMedian) / 1e9);
        }
    }
}
