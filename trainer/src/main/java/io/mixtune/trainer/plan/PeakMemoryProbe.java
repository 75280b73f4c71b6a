package io.mixtune.trainer.plan;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.GradientCollector;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.nf4.Nf4Loading;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.LossScaler;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.run.CachedPreset;
import io.mixtune.trainer.sft.SftObjective;
import io.mixtune.trainer.run.TrainingBatch;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.run.OptimizerStep;
import io.mixtune.trainer.run.StepContext;
import io.mixtune.trainer.run.TrainingModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;

/**
 * Measures the peak memory of training steps on a recipe's model, to hold {@link MemoryPlan}'s prediction against.
 * The steps are SFT optimizer steps ({@link OptimizerStep} with {@link SftObjective}) on a synthetic micro-batch
 * of micro_batch_size x max_seq_len random tokens whose last positions are targets, with the model and adapter loaded
 * as training loads them.
 *
 * <p>Run it in a JVM of its own with a fixed, pre-touched heap ({@code -Xms} = {@code -Xmx},
 * {@code -XX:+AlwaysPreTouch}) and the JIT's first tier alone ({@link #jvmOptions} says why): the heap is then
 * resident from the start, so the growth of resident memory is native memory alone (libtorch's arrays, allocator
 * caches), and the NF4 weights, which live on the Java heap, are measured as the live heap they add. What is compared
 * with the plan:
 *
 * <pre>
 *   measured = (VmHWM - VmRSS at the baseline) + (live heap after loading - live heap at the baseline)
 * </pre>
 *
 * The baseline is taken after the engine is up and has run a small forward and backward (its thread pools and autograd
 * engine started), before the model loads; VmHWM is reset there through /proc/self/clear_refs.
 *
 * <p>Usage: {@code PeakMemoryProbe RECIPE TARGETS [STEPS [key.path=value ...]]}; prints one {@code key=value} line.
 */
public final class PeakMemoryProbe {
    private static final double GIB = 1L << 30;

    private PeakMemoryProbe() {}

    public static void main(String[] args) throws IOException {
        if (args.length < 2) {
            System.err.println("usage: PeakMemoryProbe RECIPE TARGETS [STEPS [key.path=value ...]]");
            System.exit(2);
        }
        Recipe recipe = RecipeReader.read(Path.of(args[0]),
                args.length > 3 ? Arrays.asList(args).subList(3, args.length) : List.of()).recipe();
        int targets = Integer.parseInt(args[1]);
        int steps = args.length > 2 ? Integer.parseInt(args[2]) : 2;

        Path modelDir = TrainingData.baseModelDir(recipe);
        if (recipe.model().path() == null) {
            CachedPreset.ensure(recipe.model().preset(), modelDir);
        }
        warmUpEngine();
        long heapBefore = liveHeap();
        Files.writeString(Path.of("/proc/self/clear_refs"), "5");
        long rssBefore = status("VmRSS");

        try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
            DataType computeType = TrainingModel.computeType(recipe.model(), Device.cpu());
            MistralCheckpoint.LinearFactory linears = "nf4".equals(recipe.model().quantize())
                    ? Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION) : MistralCheckpoint.DENSE;
            CausalLm model = MistralCheckpoint.load(modelDir, manager, linears, computeType);
            LoraModel lora = new LoraModel(model);
            lora.addAdapter(TrainingModel.ADAPTER_NAME, recipe.lora().toConfig(), LoraModel.Init.PEFT_DEFAULT, 0);
            lora.setTraining(true);
            List<NDArray> parameters = lora.parameters(TrainingModel.ADAPTER_NAME);
            Recipe.Train train = recipe.train();
            AdamW optimizer = new AdamW(parameters, null, train.adamBeta1(), train.adamBeta2(), train.adamEps(),
                    train.weightDecay(), train.eightBitMoments());
            long heapModel = liveHeap() - heapBefore;
            long afterLoad = status("VmRSS") - rssBefore;

            TrainingBatch batch = syntheticBatch(model.config(), train.microBatchSize(), recipe.data().maxSeqLen(),
                    targets, recipe.data().packing());
            LossScaler scaler = computeType == DataType.FLOAT16 ? LossScaler.dynamic() : LossScaler.off();
            double coefficient = train.routerAuxCoefficient(model.config());
            com.sun.management.OperatingSystemMXBean os = (com.sun.management.OperatingSystemMXBean)
                    java.lang.management.ManagementFactory.getOperatingSystemMXBean();
            StepContext context = new StepContext(model, parameters, manager, optimizer, scaler, train.maxGradNorm(),
                    coefficient, train.gradientCheckpointing(), 0);
            for (int step = 0; step < steps; step++) {
                long wall = System.nanoTime();
                long cpu = os.getProcessCpuTime();
                OptimizerStep.run(SftObjective::gradients, List.of(batch), context.withDropoutSeed(step), train.lr());
                // Process CPU time too: on a shared machine it moves less with the load than the wall time does.
                System.out.printf(Locale.ROOT, "step %d: %.2f s wall, %.2f s process CPU%n", step + 1,
                        (System.nanoTime() - wall) / 1e9, (os.getProcessCpuTime() - cpu) / 1e9);
            }
            long nativeGrowth = status("VmHWM") - rssBefore;
            long measured = nativeGrowth + heapModel;
            MemoryPlan plan = MemoryPlan.predict(MemoryPlan.Setup.of(recipe, model.config(),
                    batch.targetCount()));
            long predicted = plan.total() - plan.bytesOf(MemoryPlan.PROCESS_AT_START); // the baseline is not measured
            System.out.printf(Locale.ROOT, "%s, %d x %d tokens, %d targets, checkpointing %s: predicted %.3f GiB, "
                    + "measured %.3f GiB (native %.3f + NF4 heap %.3f), error %+.1f%%%n",
                    recipe.model().preset() != null ? recipe.model().preset() : recipe.model().path(),
                    batch.rows(), batch.length(), batch.targetCount(), train.gradientCheckpointing() ? "on" : "off",
                    predicted / GIB, measured / GIB, nativeGrowth / GIB, heapModel / GIB,
                    100.0 * (predicted - measured) / measured);
            System.out.printf(Locale.ROOT, "predicted_bytes=%d measured_bytes=%d native_growth=%d heap_model=%d "
                    + "after_load_native=%d baseline_rss=%d targets=%d%n", predicted, measured, nativeGrowth,
                    heapModel, afterLoad, rssBefore, batch.targetCount());
            for (MemoryPlan.Component component : plan.components()) {
                System.out.printf(Locale.ROOT, "  %-36s %9.3f GiB  %s%n", component.name(), component.bytes() / GIB,
                        component.detail());
            }
        }
    }

    /** libtorch's thread pools and autograd engine start on first use: start them before the baseline. */
    private static void warmUpEngine() {
        try (NDManager manager = NDManager.newBaseManager(Device.cpu())) {
            NDArray weight = manager.randomNormal(new Shape(64, 64));
            weight.setRequiresGradient(true);
            try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                NDArray x = manager.randomNormal(new Shape(4, 16, 64));
                collector.backward(ai.djl.nn.core.Linear.linear(x, weight).singletonOrThrow().softmax(-1).sum());
            }
        }
        System.gc();
    }

    /**
     * micro_batch_size rows of max_seq_len random tokens, each ending in targets / rows target positions: one packed
     * sample per row, or padded rows (nothing padded) when the recipe does not pack.
     */
    static TrainingBatch syntheticBatch(ModelConfig config, int rows, int length, int targets, boolean packed) {
        SplittableRandom random = new SplittableRandom(7);
        long[][] ids = new long[rows][length];
        long[][] labels = new long[rows][length];
        long[][] positions = new long[rows][length];
        long[][] zeros = new long[rows][length];
        long[][] ones = new long[rows][length];
        int perRow = Math.min(length - 1, (targets + rows - 1) / rows);
        for (int r = 0; r < rows; r++) {
            for (int t = 0; t < length; t++) {
                ids[r][t] = 3 + random.nextInt(config.vocabSize() - 3);
                labels[r][t] = t >= length - perRow ? ids[r][t] : io.mixtune.data.template.TokenizedSample.IGNORE;
                positions[r][t] = t;
                ones[r][t] = 1;
            }
        }
        return packed ? new TrainingBatch(ids, labels, positions, zeros, null)
                : new TrainingBatch(ids, labels, positions, null, ones);
    }

    private static long liveHeap() {
        Runtime runtime = Runtime.getRuntime();
        for (int i = 0; i < 3; i++) {
            System.gc();
        }
        return runtime.totalMemory() - runtime.freeMemory();
    }

    /** A field of /proc/self/status, in bytes. */
    private static long status(String field) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith(field + ":")) {
                return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
            }
        }
        throw new IOException("no " + field + " in /proc/self/status");
    }

    /**
     * The JVM options the measurement needs: a fixed heap of {@code heapMegabytes}, resident from the start, and the
     * JIT's first tier only. C2's compilations take their working memory from malloc'd arenas (tens of MB for large
     * methods) that it pools and frees on a timer, so on a loaded machine they landed in the high-water mark or not at
     * random: tiny-mistral fp16 measured 338-377 MiB over six runs with C2, 356.1-356.4 MiB over four with C1 alone
     * (tiny-mixtral fp16 checkpointed: 261-278 with C2, 271.5-272.0 with C1). The step's time is libtorch's either way.
     */
    public static List<String> jvmOptions(int heapMegabytes) {
        return new ArrayList<>(List.of("-Xms" + heapMegabytes + "m", "-Xmx" + heapMegabytes + "m",
                "-XX:+AlwaysPreTouch", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Dai.djl.offline=true"));
    }
}
