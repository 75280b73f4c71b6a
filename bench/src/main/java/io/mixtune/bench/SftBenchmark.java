package io.mixtune.bench;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.pytorch.jni.JniUtils;
import ai.djl.training.GradientCollector;
import io.mixtune.data.batch.EpochBatches;
import io.mixtune.data.batch.PackedRow;
import io.mixtune.data.batch.PackingStrategy;
import io.mixtune.data.batch.SamplePacker;
import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.DataReport;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.data.template.SampleBuilder;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Scalars;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.GradientClipping;
import io.mixtune.trainer.optim.OptimizerUpdate;
import io.mixtune.trainer.optim.LossScaler;
import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.OptimizerStep;
import io.mixtune.trainer.run.StepContext;
import io.mixtune.trainer.run.TrainingBatch;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.run.TrainingModel;
import io.mixtune.trainer.sft.SftObjective;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * mixtune's SFT training throughput on exactly what bench/sft_trl.py trains with TRL's SFTTrainer + PEFT, for
 * bench/sft.sh to put side by side: float32 on CPU; LoRA r 16, alpha 16, dropout 0 on every linear layer but the router
 * and lm_head; the sample chats in the Mistral v1 template with loss on the answers (and their EOS); each chat cut to
 * its first max_seq_len tokens as TRL's bfd packing cuts it, then packed as bfd packs (best-fit decreasing, TRL's)
 * into rows of max_seq_len, shuffled as `mixtune train` shuffles them; one row per step; Mixtral's load-balancing loss
 * at the config's coefficient; AdamW at lr 1e-4 with clipping at 1.0. Every step is {@link OptimizerStep} with {@link SftObjective},
 * the step `mixtune train` runs. Warm-up steps first, untimed.
 *
 * <p>Usage: SftBenchmark --data FILE [--steps 20] [--warmup 3] [--max-seq-len 512] [--peak GFLOPS] [--phases N]
 * [--trace FILE] [--threads N] MODEL_DIR... GFLOP/s follow sft_trl.py's formula ({@link SftFlops}); --peak is the machine's fp32
 * matmul peak (bench/sft.sh measures it once, with sft_trl.py's matmul_peak). --phases runs N more steps with the
 * forward, backward and optimizer timed apart; --trace records one more step with libtorch's profiler and prints the
 * operators that took the time. --threads sets libtorch's threads (default: one per core, as torch's); the CPU time per
 * step printed beside the wall time is the whole process's, so with one thread it is the step's work even on a busy
 * machine.
 */
public final class SftBenchmark {
    private static final int RANK = 16;
    private static final double ALPHA = 16;
    private static final double LR = 1e-4;
    private static final double MAX_GRAD_NORM = 1.0;
    private static final long SEED = 0;

    /** The command line. */
    private record Options(Path data, int steps, int warmup, int maxSeqLen, double peak, int phases, Path trace,
            int threads, List<Path> models) {
        static Options parse(String[] args) {
            Path data = Path.of("data/samples/chats.jsonl");
            int steps = 20;
            int warmup = 3;
            int maxSeqLen = 512;
            double peak = Double.NaN;
            int phases = 0;
            Path trace = null;
            int threads = 0;
            List<Path> models = new ArrayList<>();
            for (int i = 0; i < args.length; i++) {
                switch (args[i]) {
                    case "--data" -> data = Path.of(args[++i]);
                    case "--steps" -> steps = Integer.parseInt(args[++i]);
                    case "--warmup" -> warmup = Integer.parseInt(args[++i]);
                    case "--max-seq-len" -> maxSeqLen = Integer.parseInt(args[++i]);
                    case "--peak" -> peak = Double.parseDouble(args[++i]);
                    case "--phases" -> phases = Integer.parseInt(args[++i]);
                    case "--trace" -> trace = Path.of(args[++i]);
                    case "--threads" -> threads = Integer.parseInt(args[++i]);
                    default -> {
                        if (args[i].startsWith("--")) {
                            throw new IllegalArgumentException("unknown option " + args[i] + ": expected --data, "
                                    + "--steps, --warmup, --max-seq-len, --peak, --phases, --trace or --threads");
                        }
                        models.add(Path.of(args[i]));
                    }
                }
            }
            if (models.isEmpty()) {
                throw new IllegalArgumentException("no model directory given: SftBenchmark [options] MODEL_DIR...");
            }
            return new Options(data, steps, warmup, maxSeqLen, peak, phases, trace, threads, models);
        }
    }

    public static void main(String[] args) {
        Options options = Options.parse(args);
        if (options.threads() > 0) {
            Engine.getInstance(); // loads libtorch, whose thread count is set next
            JniUtils.setNumThreads(options.threads());
        }
        for (Path model : options.models()) {
            run(model, options);
        }
    }

    private static void run(Path modelDir, Options options) {
        ModelConfig config = ModelConfig.read(modelDir.resolve("config.json"));
        String name = modelDir.getFileName().toString();
        List<TokenizedSample> samples = samples(modelDir, config, options, true);
        List<TrainingBatch> rows = new ArrayList<>();
        for (List<PackedRow> batch : EpochBatches.packed(samples, options.maxSeqLen(), 1, config.eosTokenId(), SEED, 0)) {
            rows.add(TrainingBatch.packed(batch));
        }
        System.out.println(packingLine(name + " data, each chat cut to its first " + options.maxSeqLen()
                + " tokens as TRL's bfd does", samples, options.maxSeqLen(), config));
        System.out.println(packingLine(name + " data with mixtune's own truncation (trailing exchanges dropped, as "
                + "`mixtune train` does)", samples(modelDir, config, options, false), options.maxSeqLen(), config));

        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(modelDir, manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter(TrainingModel.ADAPTER_NAME, new LoraConfig(RANK, ALPHA, 0.0, List.of(LoraConfig.ALL_LINEAR),
                    false, Map.of(), Map.of()), LoraModel.Init.PEFT_DEFAULT, SEED);
            lora.setTraining(true);
            List<NDArray> parameters = lora.parameters(TrainingModel.ADAPTER_NAME);
            long trainable = parameters.stream().mapToLong(p -> p.getShape().size()).sum();
            AdamW optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0.0);
            double auxCoefficient = config.isMixtureOfExperts() ? config.routerAuxLossCoef() : 0;
            StepContext context = new StepContext(model, parameters, manager, optimizer, LossScaler.off(),
                    MAX_GRAD_NORM, auxCoefficient, false, 0);

            int total = options.warmup() + options.steps();
            double[] seconds = new double[options.steps()];
            double[] cpuSeconds = new double[options.steps()];
            double[] cpuSecondsPerToken = new double[options.steps()];
            long tokens = 0;
            long targets = 0;
            long samplesTrained = 0;
            double flops = 0;
            double fastestTokensPerSecond = 0;
            double[] tokensPerSecond = new double[options.steps()];
            for (int step = 0; step < total; step++) {
                TrainingBatch row = rows.get(step % rows.size());
                long start = System.nanoTime();
                long cpuStart = processCpuNanos();
                OptimizerStep.run(SftObjective::gradients, List.of(row),
                        context.withDropoutSeed(SEED * 1_000_003L + step), LR);
                double elapsed = (System.nanoTime() - start) / 1e9;
                double cpu = (processCpuNanos() - cpuStart) / 1e9;
                int timed = step - options.warmup();
                if (timed >= 0) {
                    seconds[timed] = elapsed;
                    cpuSeconds[timed] = cpu;
                    cpuSecondsPerToken[timed] = cpu / row.realTokens();
                    tokens += row.realTokens();
                    targets += row.targetCount();
                    List<Integer> lengths = sampleLengths(row);
                    samplesTrained += lengths.size();
                    flops += SftFlops.step(config, RANK, lengths, row.targetCount());
                    tokensPerSecond[timed] = row.realTokens() / elapsed;
                    fastestTokensPerSecond = Math.max(fastestTokensPerSecond, tokensPerSecond[timed]);
                }
            }
            double sum = Arrays.stream(seconds).sum();
            int n = options.steps();
            System.out.printf(Locale.ROOT, "sft-mixtune %s: %d steps after %d warm-up, 1 packed row/step (%.0f tokens, "
                    + "%.0f targets, %.1f samples per row on average; %d rows from %d chats), LoRA r %d (%,d "
                    + "trainable), %d threads: median step %.1f ms (best %.1f), %.0f tokens/s, %.0f target tokens/s "
                    + "(fastest step %.0f tokens/s), %.3f GFLOP/step, %.2f GFLOP/s (%s), load average %s%n", name, n,
                    options.warmup(),
                    (double) tokens / n, (double) targets / n, (double) samplesTrained / n, rows.size(), samples.size(),
                    RANK, trainable, JniUtils.getNumThreads(), median(seconds) * 1e3,
                    Arrays.stream(seconds).min().orElse(0) * 1e3, tokens / sum, targets / sum, fastestTokensPerSecond,
                    flops / n / 1e9, flops / sum / 1e9, ofPeak(flops / sum / 1e9, options.peak()), loadAverage());
            System.out.printf(Locale.ROOT, "sft-mixtune %s: tokens/s per step: median %.0f, fastest %.0f; process CPU "
                    + "time per 1000 tokens: median %.1f ms (%.1f ms per step)%n", name, median(tokensPerSecond),
                    fastestTokensPerSecond, median(cpuSecondsPerToken) * 1e6, median(cpuSeconds) * 1e3);

            List<TrainingBatch> timedRows = new ArrayList<>();
            for (int step = options.warmup(); step < total; step++) {
                timedRows.add(rows.get(step % rows.size()));
            }
            if (options.phases() > 0) {
                phases(name, model, parameters, optimizer, auxCoefficient, timedRows, options.phases(), manager);
            }
            if (options.trace() != null) {
                Path trace = options.trace().resolveSibling(name + "-" + options.trace().getFileName());
                OpProfile.record(trace, () -> phase(model, parameters, optimizer, auxCoefficient, timedRows.get(0),
                        manager));
                OpProfile.summarise(trace, name, 14);
            }
        }
    }

    /**
     * The chats in the Mistral template with loss on every answer: with {@code cutLikeTrl} tokenized whole and cut to
     * their first max_seq_len tokens (TRL's bfd truncation), else truncated by mixtune's SampleBuilder.
     */
    private static List<TokenizedSample> samples(Path modelDir, ModelConfig config, Options options,
            boolean cutLikeTrl) {
        int limit = cutLikeTrl ? Integer.MAX_VALUE / 2 : options.maxSeqLen();
        DataConfig data = new DataConfig(List.of(options.data().toString()), List.of(), 0, "messages", "mistral", null,
                limit, true, "all_assistant_turns", false);
        // As training resolves it: a preset's folder without tokenizer.json takes the bundled one, a config.json
        // whose bos_token_id is null the tokenizer's BOS or none.
        TokenizerFile tokenizerFile = TrainingData.tokenizer(modelDir, config,
                !Files.isRegularFile(modelDir.resolve("tokenizer.json")));
        List<TokenizedSample> samples;
        try (TextTokenizer tokenizer = tokenizerFile.open()) {
            SampleBuilder builder = new SampleBuilder(data.chatTemplate(tokenizerFile.bosId(), tokenizerFile.eosId()),
                    tokenizer, limit, data.lossPolicy());
            samples = ChatDataset.read(List.of(options.data()), data.chatFormat(), builder, false, new DataReport());
        }
        if (!cutLikeTrl) {
            return samples;
        }
        List<TokenizedSample> cut = new ArrayList<>();
        for (TokenizedSample sample : samples) {
            int keep = Math.min(sample.length(), options.maxSeqLen());
            cut.add(new TokenizedSample(Arrays.copyOf(sample.inputIds(), keep), Arrays.copyOf(sample.labels(), keep),
                    sample.source()));
        }
        return cut;
    }

    /** "LABEL: R rows from C chats, mean T tokens and G targets per row, packing efficiency E%" over all rows. */
    private static String packingLine(String label, List<TokenizedSample> samples, int rowLength, ModelConfig config) {
        List<PackedRow> rows = PackingStrategy.BFD.pack(samples, rowLength, config.eosTokenId());
        long tokens = 0;
        long targets = 0;
        for (PackedRow row : rows) {
            tokens += row.realTokens();
            targets += TrainingBatch.packed(List.of(row)).targetCount();
        }
        return String.format(Locale.ROOT, "%s: %d rows from %d chats, mean %.1f tokens and %.1f targets per row, "
                + "packing efficiency %.1f%%", label, rows.size(), samples.size(), (double) tokens / rows.size(),
                (double) targets / rows.size(), 100 * SamplePacker.efficiency(rows));
    }

    /**
     * {@code steps} more steps on the timed rows with the forward (loss terms and objective), the backward, and
     * clipping + AdamW timed apart: the same operations as {@link OptimizerStep} with {@link SftObjective}, split so the clock can
     * stop between them.
     */
    private static void phases(String name, CausalLm model, List<NDArray> parameters, AdamW optimizer,
            double auxCoefficient, List<TrainingBatch> rows, int steps, NDManager manager) {
        double[][] seconds = new double[3][steps];
        for (int i = 0; i < steps; i++) {
            double[] phase = phase(model, parameters, optimizer, auxCoefficient, rows.get(i % rows.size()), manager);
            for (int p = 0; p < 3; p++) {
                seconds[p][i] = phase[p];
            }
        }
        double forward = median(seconds[0]);
        double backward = median(seconds[1]);
        double update = median(seconds[2]);
        double step = forward + backward + update;
        System.out.printf(Locale.ROOT, "sft-mixtune %s phases (median of %d steps): forward %.1f ms (%.0f%%), backward "
                + "%.1f ms (%.0f%%), clip + AdamW + zero %.1f ms (%.0f%%), load average %s%n", name, steps,
                forward * 1e3, 100 * forward / step, backward * 1e3, 100 * backward / step, update * 1e3,
                100 * update / step, loadAverage());
    }

    /** One step in three timed parts: forward, backward, zeroing + clipping + AdamW; seconds of each. */
    private static double[] phase(CausalLm model, List<NDArray> parameters, AdamW optimizer, double auxCoefficient,
            TrainingBatch row, NDManager manager) {
        long start = System.nanoTime();
        long forwardEnd;
        long backwardEnd;
        try (NDManager step = manager.newSubManager();
                GradientCollector collector = Engine.getInstance().newGradientCollector()) {
            CausalLmLoss.Terms terms = CausalLmLoss.of(model, row, step);
            NDArray objective = Scalars.dividedBy(terms.crossEntropySum(), Math.max(1, terms.targets()));
            if (terms.loadBalancing() != null && auxCoefficient > 0) {
                objective = objective.add(Scalars.times(terms.loadBalancing(), auxCoefficient));
            }
            objective.getFloat();
            forwardEnd = System.nanoTime();
            collector.backward(objective);
            try (NDArray gradient = parameters.get(0).getGradient()) {
                gradient.getFloat(0, 0);
            }
            backwardEnd = System.nanoTime();
        }
        OptimizerUpdate.apply(0, MAX_GRAD_NORM, optimizer, LR, LossScaler.off());
        GradientClipping.zero(parameters);
        long end = System.nanoTime();
        return new double[] {(forwardEnd - start) / 1e9, (backwardEnd - forwardEnd) / 1e9, (end - backwardEnd) / 1e9};
    }

    /** Lengths of the samples packed in a one-row batch, in order. */
    private static List<Integer> sampleLengths(TrainingBatch row) {
        long[] sampleIds = row.sampleIds()[0];
        List<Integer> lengths = new ArrayList<>();
        for (long id : sampleIds) {
            if (id < 0) {
                continue;
            }
            if (id == lengths.size()) {
                lengths.add(0);
            }
            lengths.set((int) id, lengths.get((int) id) + 1);
        }
        return lengths;
    }

    static long processCpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime();
    }

    /** The 1-minute load average from /proc/loadavg: the figures are only as good as the machine is quiet. */
    static String loadAverage() {
        try {
            return Files.readString(Path.of("/proc/loadavg")).split(" ")[0];
        } catch (java.io.IOException e) {
            return "unknown";
        }
    }

    static String ofPeak(double gflops, double peak) {
        return Double.isNaN(peak) ? "no matmul peak given"
                : String.format(Locale.ROOT, "%.0f%% of the %.0f GFLOP/s matmul peak", 100 * gflops / peak, peak);
    }

    static double median(double[] values) {
        double[] sorted = values.clone();
        Arrays.sort(sorted);
        int n = sorted.length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }
}
