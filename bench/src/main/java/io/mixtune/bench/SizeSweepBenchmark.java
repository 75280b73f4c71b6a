package io.mixtune.bench;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.pytorch.jni.JniUtils;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.data.batch.PackedRow;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.DType;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.LossScaler;
import io.mixtune.trainer.run.OptimizerStep;
import io.mixtune.trainer.run.StepContext;
import io.mixtune.trainer.run.TrainingBatch;
import io.mixtune.trainer.run.TrainingModel;
import io.mixtune.trainer.sft.SftObjective;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * The SFT step at growing model sizes, the work bench/sweep_hf.py gives transformers + PEFT: random fp32 Mistral- and
 * Mixtral-shaped checkpoints, batch x length random tokens with every token trained, LoRA r 16 / alpha 16 / dropout 0
 * on attention and every expert's (or the MLP's) w1/w2/w3, load-balancing loss on for Mixtral, clipping at 1.0 and
 * AdamW at lr 1e-4: {@link OptimizerStep} with {@link SftObjective}, the step `mixtune train` runs.
 *
 * <p>Usage: SizeSweepBenchmark --work DIR [--steps 5] [--warmup 2] [--batch 4] [--length 256] [--peak GFLOPS]
 * [--threads N] [--trace] SPEC... where SPEC is {@code mixtral-H-L} or {@code mistral-H-L} (hidden size H, L layers;
 * 32000 words, head_dim 64, heads H/64, key-value heads a quarter of them, intermediate 3.5 H as Mixtral-8x7B's 14336 /
 * 4096, 8 experts top-2 for Mixtral). Each checkpoint is written once under DIR/SPEC, with DIR/SPEC/tokens.txt (the
 * token rows of every step, one row per line) that the Python side reads, so both train on the same weights and tokens.
 */
public final class SizeSweepBenchmark {
    private static final int RANK = 16;
    private static final double LR = 1e-4;
    private static final long SEED = 42;

    record Options(Path work, int steps, int warmup, int batch, int length, double peak, int threads, boolean trace,
            List<String> specs) {
        static Options parse(String[] args) {
            Path work = null;
            int steps = 5;
            int warmup = 2;
            int batch = 4;
            int length = 256;
            double peak = Double.NaN;
            int threads = 0;
            boolean trace = false;
            List<String> specs = new ArrayList<>();
            for (int i = 0; i < args.length; i++) {
                switch (args[i]) {
                    case "--work" -> work = Path.of(args[++i]);
                    case "--steps" -> steps = Integer.parseInt(args[++i]);
                    case "--warmup" -> warmup = Integer.parseInt(args[++i]);
                    case "--batch" -> batch = Integer.parseInt(args[++i]);
                    case "--length" -> length = Integer.parseInt(args[++i]);
                    case "--peak" -> peak = Double.parseDouble(args[++i]);
                    case "--threads" -> threads = Integer.parseInt(args[++i]);
                    case "--trace" -> trace = true;
                    default -> {
                        if (args[i].startsWith("--") || !args[i].matches("(mixtral|mistral)-\\d+-\\d+")) {
                            throw new IllegalArgumentException("unexpected argument " + args[i] + ": expected --work, "
                                    + "--steps, --warmup, --batch, --length, --peak, --threads, --trace or a model "
                                    + "spec such as mixtral-256-4");
                        }
                        specs.add(args[i]);
                    }
                }
            }
            if (work == null || specs.isEmpty()) {
                throw new IllegalArgumentException("usage: SizeSweepBenchmark --work DIR [options] SPEC...");
            }
            return new Options(work, steps, warmup, batch, length, peak, threads, trace, specs);
        }
    }

    public static void main(String[] args) {
        Options options = Options.parse(args);
        if (options.threads() > 0) {
            Engine.getInstance();
            JniUtils.setNumThreads(options.threads());
        }
        for (String spec : options.specs()) {
            Path dir = options.work().resolve(spec);
            ModelConfig config = prepare(spec, dir, options);
            run(spec, dir, config, options);
        }
    }

    /** config.json of a spec such as mixtral-256-4. */
    static ObjectNode configJson(String spec) {
        String[] parts = spec.split("-");
        boolean moe = parts[0].equals("mixtral");
        int hidden = Integer.parseInt(parts[1]);
        int layers = Integer.parseInt(parts[2]);
        int heads = Math.max(1, hidden / 64);
        ObjectNode json = new ObjectMapper().createObjectNode();
        json.put("model_type", parts[0]);
        json.put("hidden_size", hidden);
        json.put("intermediate_size", hidden * 7 / 2);
        json.put("num_hidden_layers", layers);
        json.put("num_attention_heads", heads);
        json.put("num_key_value_heads", Math.max(1, heads / 4));
        json.put("head_dim", hidden / heads);
        json.put("vocab_size", 32000);
        json.put("rms_norm_eps", 1e-5);
        json.put("rope_theta", 1e6);
        json.putNull("sliding_window");
        json.put("max_position_embeddings", 4096);
        json.put("tie_word_embeddings", false);
        if (moe) {
            json.put("num_local_experts", 8);
            json.put("num_experts_per_tok", 2);
            json.put("router_aux_loss_coef", 0.02);
        }
        json.put("bos_token_id", 1);
        json.put("eos_token_id", 2);
        return json;
    }

    private static ModelConfig prepare(String spec, Path dir, Options options) {
        ModelConfig config = ModelConfig.fromJson(configJson(spec));
        try {
            if (!Files.exists(dir.resolve("config.json"))) {
                RandomCheckpoint.write(config, dir, 0, DType.F32, RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES);
            }
            Path tokens = dir.resolve("tokens.txt");
            int rows = (options.warmup() + options.steps()) * options.batch();
            if (!Files.exists(tokens) || Files.readAllLines(tokens).size() != rows
                    || Files.readAllLines(tokens).get(0).split(" ").length != options.length()) {
                SplittableRandom random = new SplittableRandom(SEED);
                StringBuilder text = new StringBuilder();
                for (int r = 0; r < rows; r++) {
                    for (int t = 0; t < options.length(); t++) {
                        text.append(t == 0 ? "" : " ").append(3 + random.nextInt(config.vocabSize() - 3));
                    }
                    text.append('\n');
                }
                Files.writeString(tokens, text);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return config;
    }

    /** The batches of every step: rows of one sample each, every token a target (labels = ids, shifted inside). */
    private static List<TrainingBatch> batches(Path dir, Options options) {
        List<String> lines;
        try {
            lines = Files.readAllLines(dir.resolve("tokens.txt"));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        List<TrainingBatch> batches = new ArrayList<>();
        for (int step = 0; step < options.warmup() + options.steps(); step++) {
            List<PackedRow> rows = new ArrayList<>();
            for (int b = 0; b < options.batch(); b++) {
                long[] ids = Arrays.stream(lines.get(step * options.batch() + b).split(" "))
                        .mapToLong(Long::parseLong).toArray();
                long[] positions = new long[ids.length];
                Arrays.setAll(positions, t -> t);
                rows.add(new PackedRow(ids, ids.clone(), positions, new long[ids.length], ids.length));
            }
            batches.add(TrainingBatch.packed(rows));
        }
        return batches;
    }

    private static void run(String spec, Path dir, ModelConfig config, Options options) {
        List<TrainingBatch> batches = batches(dir, options);
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(dir, manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter(TrainingModel.ADAPTER_NAME, new LoraConfig(RANK, RANK, 0.0, List.of(LoraConfig.ALL_LINEAR),
                    false, Map.of(), Map.of()), LoraModel.Init.PEFT_DEFAULT, SEED);
            lora.setTraining(true);
            List<NDArray> parameters = lora.parameters(TrainingModel.ADAPTER_NAME);
            AdamW optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0.0);
            double auxCoefficient = config.isMixtureOfExperts() ? config.routerAuxLossCoef() : 0;
            StepContext context = new StepContext(model, parameters, manager, optimizer, LossScaler.off(), 1.0,
                    auxCoefficient, false, 0);
            double[] seconds = new double[options.steps()];
            double[] cpuSeconds = new double[options.steps()];
            double flopsPerStep = 0;
            long tokensPerStep = (long) options.batch() * options.length();
            for (int b = 0; b < options.batch(); b++) {
                flopsPerStep += SftFlops.step(config, RANK, List.of(options.length()), options.length() - 1);
            }
            Runnable[] steps = new Runnable[batches.size()];
            for (int s = 0; s < batches.size(); s++) {
                TrainingBatch batch = batches.get(s);
                steps[s] = () -> OptimizerStep.run(SftObjective::gradients, List.of(batch), context, LR);
            }
            for (int s = 0; s < steps.length; s++) {
                long start = System.nanoTime();
                long cpuStart = SftBenchmark.processCpuNanos();
                steps[s].run();
                if (s >= options.warmup()) {
                    seconds[s - options.warmup()] = (System.nanoTime() - start) / 1e9;
                    cpuSeconds[s - options.warmup()] = (SftBenchmark.processCpuNanos() - cpuStart) / 1e9;
                }
            }
            double median = SftBenchmark.median(seconds);
            double gflops = flopsPerStep / median / 1e9;
            System.out.printf(Locale.ROOT, "sweep-mixtune %s: %d x %d tokens, all trained, %d steps after %d warm-up, "
                    + "%d threads: median step %.1f ms (best %.1f), %.0f tokens/s, %.2f GFLOP/step, %.1f GFLOP/s (%s); "
                    + "process CPU time per step: median %.1f ms; load average %s%n", spec, options.batch(), options.length(), options.steps(), options.warmup(),
                    JniUtils.getNumThreads(), median * 1e3, Arrays.stream(seconds).min().orElse(0) * 1e3,
                    tokensPerStep / median, flopsPerStep / 1e9, gflops, SftBenchmark.ofPeak(gflops, options.peak()),
                    SftBenchmark.median(cpuSeconds) * 1e3, SftBenchmark.loadAverage());
            if (options.trace()) {
                Path trace = options.work().resolve(spec + "-trace.json");
                OpProfile.record(trace, true, steps[steps.length - 1]);
                OpProfile.summarise(trace, "sweep-mixtune " + spec, 16);
            }
        }
    }
}
