package io.mixtune.bench;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.training.GradientCollector;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.nf4.Nf4Loading;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.DType;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * One LoRA training step (forward, next-token cross-entropy, backward into the adapters) of tiny-mixtral with an NF4
 * base beside an fp32 base: tokens/s of each and their ratio. Usage: TrainingStepBenchmark DIR [preset] [batch]
 * [length] [iterations]. No optimizer update: the step is what the base's storage changes.
 */
public final class TrainingStepBenchmark {
    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args.length > 0 ? args[0] : "target/bench-tiny-mixtral");
        String preset = args.length > 1 ? args[1] : "tiny-mixtral";
        int batch = args.length > 2 ? Integer.parseInt(args[2]) : 4;
        int length = args.length > 3 ? Integer.parseInt(args[3]) : 256;
        int iterations = args.length > 4 ? Integer.parseInt(args[4]) : 10;
        if (!Files.exists(dir.resolve("config.json"))) {
            RandomCheckpoint.write(ModelPreset.load(preset), dir, 0, DType.F32, RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES);
        }
        double fp32 = run(dir, MistralCheckpoint.DENSE, "fp32 base", preset, batch, length, iterations);
        double nf4 = run(dir, Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION), "NF4 base", preset, batch, length,
                iterations);
        System.out.printf(Locale.ROOT, "ratio NF4 / fp32: %.2f%n", nf4 / fp32);
    }

    static double run(Path dir, MistralCheckpoint.LinearFactory linears, String label, String preset, int batch,
            int length, int iterations) {
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(dir, manager, linears)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", LoraConfig.of(16, 16, List.of(LoraConfig.ALL_LINEAR)), LoraModel.Init.RANDOM, 0);
            lora.setTraining(true);
            List<NDArray> parameters = lora.parameters("default");
            SplittableRandom random = new SplittableRandom(1);
            long[][] ids = new long[batch][length];
            long[][] positions = new long[batch][length];
            for (int b = 0; b < batch; b++) {
                for (int t = 0; t < length; t++) {
                    ids[b][t] = random.nextInt(model.config().vocabSize());
                    positions[b][t] = t;
                }
            }
            double[] seconds = new double[iterations];
            for (int i = -2; i < iterations; i++) {
                try (NDManager step = manager.newSubManager()) {
                    NDArray inputIds = step.create(ids);
                    NDArray positionIds = step.create(positions);
                    long start = System.nanoTime();
                    try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                        NDArray logits = model.forward(inputIds, positionIds, null).get(new NDIndex(":, :-1"));
                        NDArray targets = inputIds.get(new NDIndex(":, 1:")).expandDims(-1);
                        NDArray loss = logits.logSoftmax(-1).gather(targets, -1).mean().neg();
                        collector.backward(loss);
                    }
                    parameters.get(0).getGradient().getFloat(0, 0); // wait for the backward pass
                    if (i >= 0) {
                        seconds[i] = (System.nanoTime() - start) / 1e9;
                    }
                    parameters.forEach(p -> p.getGradient().subi(p.getGradient())); // fresh gradients next step
                }
            }
            Arrays.sort(seconds);
            double median = seconds[iterations / 2];
            double tokensPerSecond = batch * length / median;
            System.out.printf(Locale.ROOT, "training step, %s, %s batch %d x %d, LoRA r 16 all-linear (%d adapter "
                    + "arrays): median %.0f ms, %.0f tokens/s (best %.0f ms)%n", label, preset, batch, length,
                    parameters.size(), median * 1e3, tokensPerSecond, seconds[0] * 1e3);
            return tokensPerSecond;
        }
    }
}
