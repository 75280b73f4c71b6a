package io.mixtune.trainer.plan;

import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.trainer.optim.AdamW8bit;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.TrainingAverages;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The peak memory of a training step, predicted from config.json and the recipe alone: what stays for the whole run
 * (weights, adapter, its gradients, AdamW's moments) plus what one micro-batch's forward and backward hold at their
 * widest moment ({@link ForwardBytes}).
 *
 * <p>Without gradient checkpointing every layer's arrays (and its dequantized weights, which autograd keeps for the
 * backward through x W^T) live until the step's backward is done, so the peak is all of them plus the backward's
 * working memory. With it ({@code CheckpointedBackward}) the forward keeps only each layer's input, and the peak is
 * the widest of three moments: the forward through one layer, the head's forward and backward, and one layer
 * recomputed under autograd with its backward. Either way the layer holds one dequantized NF4 weight at a time
 * ({@code RecomputedWeights}), as bitsandbytes does.
 *
 * <p>PlanMeasurementTest (tiny models) and bench/plan.sh (mistral-1b) hold the prediction against measured peaks
 * ({@code PeakMemoryProbe}): within 5% on every case so far, when glibc returns freed memory at once.
 *
 * @param components the parts of the peak, which sum to {@link #total}
 * @param peak the moment of the step the peak falls in
 */
public record MemoryPlan(Setup setup, List<Component> components, String peak) {

    public enum Device { CPU, GPU }

    /**
     * What the plan is for.
     *
     * @param computeBytes bytes per element of the compute dtype: 4 (fp32) or 2 (fp16)
     * @param targets positions whose next token is a target: the rows the lm_head runs on
     * @param packed rows packed with several samples (the mask compares sample ids), else padded
     * @param referenceAdapter DPO's frozen reference is a second copy of the adapter (Stage-DPO, or a run that starts
     *     from model.adapter)
     * @param averageCopies the adapter-sized fp32 copies each weight average keeps beside training, by name
     *     ({@link TrainingAverages#deviceCopies})
     * @param eightBitMoments train.optimizer is bitsandbytes' 8-bit AdamW ({@link AdamW8bit#stateBytes})
     */
    public record Setup(ModelConfig config, boolean nf4, int computeBytes, Device device, LoraConfig lora, int rows,
            int length, long targets, boolean packed, boolean gradientCheckpointing, boolean referenceAdapter,
            Map<String, Integer> averageCopies, boolean eightBitMoments) {
        /**
         * A recipe's run: device gpu plans for a GPU (compute_dtype auto then means fp16, as training on a GPU would
         * run), auto and cpu for this CPU install (auto: fp32); the adapter of model.adapter when it names one. A DPO
         * micro-batch of P pairs is 2P padded rows (chosen and rejected).
         *
         * @param targets the rows the lm_head runs on; {@link #worstCaseTargets} when the data is not known
         */
        public static Setup of(Recipe recipe, ModelConfig config, long targets) {
            Recipe.Model model = recipe.model();
            Device device = "gpu".equals(model.device()) ? Device.GPU : Device.CPU;
            boolean fp16 = "fp16".equals(model.computeDtype()) || "auto".equals(model.computeDtype())
                    && device == Device.GPU;
            LoraConfig lora = model.adapter() == null ? recipe.lora().toConfig()
                    : PeftAdapter.readConfig(Path.of(model.adapter(), PeftAdapter.CONFIG_FILE));
            boolean dpo = recipe.train().readsPreferencePairs() || recipe.train().readsLabeledExamples();
            boolean grpo = recipe.train().readsPrompts();
            // KTO's reference is model.adapter frozen as a second adapter, as DPO's first stage's
            boolean referenceAdapter = recipe.train().method().equals("dpo") && !recipe.dpo().referenceFree()
                    && (recipe.dpo().stageCount() > 1 || model.adapter() != null)
                    || (recipe.train().readsLabeledExamples() || grpo && recipe.policyGradient().beta() != 0)
                    && model.adapter() != null;
            return new Setup(config, "nf4".equals(model.quantize()), fp16 ? 2 : 4, device, lora, rows(recipe),
                    rowLength(recipe), targets, !dpo && !grpo && recipe.data().packing(),
                    recipe.train().gradientCheckpointing(), referenceAdapter,
                    TrainingAverages.deviceCopies(recipe.averaging()), recipe.train().eightBitMoments());
        }

        /** Every position of a full micro-batch predicting a target: the most the lm_head can run on. */
        public static long worstCaseTargets(Recipe recipe) {
            return (long) rows(recipe) * (recipe.train().readsPrompts() ? recipe.policyGradient().maxCompletionLength()
                    : Math.max(recipe.data().maxSeqLen() - 1, onPolicyCompletionLength(recipe)));
        }

        /**
         * The longest row: GRPO's, and distillation's on-policy one, a prompt (at most max_seq_len - 1 tokens) and its
         * longest completion.
         */
        private static int rowLength(Recipe recipe) {
            return recipe.train().readsPrompts()
                    ? recipe.data().maxSeqLen() - 1 + recipe.policyGradient().maxCompletionLength()
                    : onPolicyCompletionLength(recipe) > 0 ? recipe.data().maxSeqLen() - 1
                            + onPolicyCompletionLength(recipe) : recipe.data().maxSeqLen();
        }

        /** The longest completion a distillation run's student samples (0: none, with lmbda 0 or another method). */
        private static int onPolicyCompletionLength(Recipe recipe) {
            return recipe.train().method().equals("distillation") && recipe.distillation().lmbda() > 0
                    ? recipe.distillation().maxCompletionLength() : 0;
        }

        private static int rows(Recipe recipe) {
            return recipe.train().microBatchSize() * (recipe.train().readsPreferencePairs() ? 2 : 1);
        }

        public Setup withCheckpointing(boolean on) {
            return new Setup(config, nf4, computeBytes, device, lora, rows, length, targets, packed, on,
                    referenceAdapter, averageCopies, eightBitMoments);
        }
    }

    /** One line of the plan. */
    public record Component(String name, long bytes, String detail) {}

    /** The CPU process as it starts, before a model loads: the JVM (its heap aside) and libtorch. */
    public static final String PROCESS_AT_START = "JVM and libtorch at start";

    /**
     * A CPU process's resident memory at the start, heap aside: 178-184 MB measured by PeakMemoryProbe (its baseline
     * minus its pre-touched heap) on the tiny and 1B runs.
     */
    static final long CPU_PROCESS_BYTES = 184L << 20;
    /**
     * What a step adds beyond the arrays counted here. CPU: 9-26 MB of resident growth over a tiny model's step that
     * the arrays do not explain (allocator caches, the JIT; PlanMeasurementTest). GPU: the CUDA context and cuBLAS
     * workspace, about 0.7 GiB for the context alone on recent GPUs, and slack for the caching allocator's
     * fragmentation: an estimate, not measured here (this install has no CUDA libtorch).
     */
    static final long CPU_OVERHEAD_BYTES = 32L << 20;
    static final long GPU_OVERHEAD_BYTES = 1L << 30;

    public long total() {
        return components.stream().mapToLong(Component::bytes).sum();
    }

    /** The bytes of the named component (0 when the plan has none by that name). */
    public long bytesOf(String name) {
        return components.stream().filter(c -> c.name().equals(name)).mapToLong(Component::bytes).sum();
    }

    public static MemoryPlan predict(Setup setup) {
        ModelConfig c = setup.config();
        int s = setup.computeBytes();
        LinearLayers linears = LinearLayers.of(c, setup.nf4(), setup.lora());
        ForwardBytes forward = new ForwardBytes(c, linears, s, setup.device() == Device.GPU,
                setup.lora().dropout() > 0, setup.rows(), setup.length());
        String dtype = s == 4 ? "fp32" : "fp16";
        List<Component> parts = new ArrayList<>();

        // For the whole run.
        long nf4 = linears.nf4Parameters();
        if (nf4 > 0) {
            parts.add(new Component("quantized weights (NF4)", linears.nf4Bytes(), String.format(Locale.ROOT,
                    "%s parameters x %.4f bytes", count(nf4), (double) linears.nf4Bytes() / nf4)));
        }
        long h = c.hiddenSize();
        long embeddingsAndNorms = (long) c.vocabSize() * h + (2L * c.numHiddenLayers() + 1) * h;
        parts.add(new Component("embeddings and norms (fp32)", embeddingsAndNorms * 4, count(embeddingsAndNorms)
                + " parameters" + (c.tieWordEmbeddings() ? ", the lm_head tied to the embeddings" : "")
                + ": float32 whatever the compute dtype, as PEFT's QLoRA keeps them"));
        long fullLinears = linears.fullPrecisionLinearParameters(c.tieWordEmbeddings());
        if (fullLinears > 0) {
            parts.add(new Component("full-precision linear weights (" + dtype + ")", fullLinears * s,
                    count(fullLinears) + " parameters: " + (setup.nf4()
                            ? "lm_head" + (c.isMixtureOfExperts() ? ", router" : "") : "every linear layer")));
        }
        long lora = linears.loraParameters();
        parts.add(new Component("LoRA adapter (fp32)", lora * 4, count(lora) + " parameters in "
                + linears.adaptedLayers() + " layers" + (linears.doraLayers() > 0 ? ", DoRA's magnitudes included"
                : "")));
        parts.add(new Component("LoRA gradients (fp32)", lora * 4, "one per adapter weight"));
        if (setup.eightBitMoments()) {
            long bytes = linears.adamW8bitStateBytes();
            parts.add(new Component("AdamW 8-bit moments (bitsandbytes)", bytes, String.format(Locale.ROOT,
                    "%.3f bytes per trained parameter (8 in fp32), in host memory: mixtune runs this update on the CPU",
                    (double) bytes / lora)));
        } else {
            parts.add(new Component("AdamW moments (2 x fp32)", 2 * lora * 4, "exp_avg and exp_avg_sq"));
        }
        if (setup.referenceAdapter()) {
            parts.add(new Component("reference adapter (fp32)", lora * 4, "the frozen reference of DPO or KTO, a "
                    + "second adapter"));
        }
        int averageCopies = setup.averageCopies().values().stream().mapToInt(Integer::intValue).sum();
        if (averageCopies > 0) {
            StringBuilder detail = new StringBuilder();
            setup.averageCopies().forEach((name, copies) -> detail.append(detail.isEmpty() ? "" : ", ").append(name)
                    .append(copies > 1 ? " " + copies : ""));
            parts.add(new Component("weight averages (fp32)", averageCopies * lora * 4, averageCopies
                    + " adapter copies beside training: " + detail));
        }
        if (setup.device() == Device.CPU && nf4 > 0) {
            parts.add(new Component("dequantization staging", linears.largestNf4() * 4,
                    "the largest NF4 weight in fp32, per thread (host memory)"));
        }

        if (linears.doraLayers() > 0) {
            parts.add(new Component("DoRA weight norm (one linear)", linears.doraNormBytes(s), "W + scale B A in fp32 "
                    + "for its row norms, one layer at a time, freed at once"));
        }

        // One micro-batch at its widest.
        parts.add(new Component("inputs and attention mask", forward.inputs(setup.packed()),
                "ids, [B, 1, T, T] mask, rotary angles, embeddings of " + setup.rows() + " x " + setup.length()));
        String peak = setup.gradientCheckpointing() ? oneLayerAtATime(setup, forward, parts)
                : everyLayerKept(setup, forward, parts);
        if (setup.device() == Device.GPU) {
            parts.add(new Component("framework overhead", GPU_OVERHEAD_BYTES, "CUDA context, cuBLAS workspace, "
                    + "allocator slack (an estimate: not measured here)"));
        } else {
            parts.add(new Component("framework overhead", CPU_OVERHEAD_BYTES, "measured; glibc's malloc may keep "
                    + "more resident (freed blocks) unless MALLOC_MMAP_THRESHOLD_=65536"));
            parts.add(new Component(PROCESS_AT_START, CPU_PROCESS_BYTES, "measured; the JVM heap holds the NF4 "
                    + "weights above, plus garbage up to -Xmx"));
        }
        return new MemoryPlan(setup, List.copyOf(parts), peak);
    }

    /**
     * The plan of a distillation run: this one with its frozen teacher, whose weights stay for the whole run (as the
     * student's base: NF4 or not, embeddings and norms in fp32, an adapter in fp32), and what a micro-batch keeps of it
     * at the peak: its final hidden states at the target positions, and its float32 logits, log-softmax and
     * probabilities there, which the divergence's graph holds until the backward (an estimate from the shapes). The
     * teacher's own forward runs without autograd before the student's and is freed layer by layer, so it adds no
     * activations to the peak.
     *
     * @param adapter the teacher's adapter, or null
     */
    public MemoryPlan withTeacher(ModelConfig teacher, boolean nf4, LoraConfig adapter) {
        long h = teacher.hiddenSize();
        long weights = frozenWeights(teacher, nf4, adapter);
        List<Component> parts = new ArrayList<>(components);
        int microBatch = beforeMicroBatch(parts);
        parts.add(microBatch, new Component("teacher weights", weights, String.format(Locale.ROOT,
                "%s, %d layers%s: %s%s, frozen", teacher.modelType().hfName(), teacher.numHiddenLayers(),
                teacher.isMixtureOfExperts() ? ", " + teacher.numLocalExperts() + " experts" : "",
                nf4 ? "NF4 base" : "unquantized base", adapter != null ? " + adapter" : "")));
        long targets = setup.targets();
        parts.add(microBatch + 1, new Component("teacher at targets", targets * h * 4
                + 3 * targets * teacher.vocabSize() * 4L, count(targets) + " positions: hidden states, and fp32 "
                + "logits, log-softmax and probabilities kept by the divergence until backward"));
        return new MemoryPlan(setup, List.copyOf(parts), peak);
    }

    /**
     * The plan of a GRPO run whose grpo.reward_funcs name reward model folders: each is loaded for the whole run as a
     * second copy of the policy's base (RewardScorer.load: NF4 or not as the policy, embeddings and norms in fp32) with
     * its adapter and score head in fp32. Its no-grad scoring passes run between the steps' training passes, so they add
     * no activations to the peak.
     *
     * @param adapters each reward model's adapter
     */
    public MemoryPlan withRewardModels(List<LoraConfig> adapters) {
        if (adapters.isEmpty()) {
            return this;
        }
        long weights = 0;
        for (LoraConfig adapter : adapters) {
            weights += frozenWeights(setup.config(), setup.nf4(), adapter) + setup.config().hiddenSize() * 4L;
        }
        List<Component> parts = new ArrayList<>(components);
        parts.add(beforeMicroBatch(parts), new Component("reward model weights", weights, String.format(Locale.ROOT,
                "%d reward model%s of grpo.reward_funcs: a copy of the base each (%s) + adapter and score head, "
                        + "frozen", adapters.size(), adapters.size() == 1 ? "" : "s",
                setup.nf4() ? "NF4" : "unquantized")));
        return new MemoryPlan(setup, List.copyOf(parts), peak);
    }

    /** A frozen model's weights as {@code config}'s base is held for training, with its fp32 adapter if any. */
    private long frozenWeights(ModelConfig config, boolean nf4, LoraConfig adapter) {
        LinearLayers linears = LinearLayers.of(config, nf4, adapter != null ? adapter : setup.lora());
        long h = config.hiddenSize();
        long embeddingsAndNorms = (long) config.vocabSize() * h + (2L * config.numHiddenLayers() + 1) * h;
        long full = linears.fullPrecisionLinearParameters(config.tieWordEmbeddings());
        return linears.nf4Bytes() + embeddingsAndNorms * 4 + full * setup.computeBytes()
                + (adapter != null ? linears.loraParameters() * 4 : 0);
    }

    /** Where the whole-run rows end: the index of the micro-batch's first row. */
    private static int beforeMicroBatch(List<Component> parts) {
        int microBatch = 0;
        while (microBatch < parts.size() && !parts.get(microBatch).name().equals("inputs and attention mask")) {
            microBatch++;
        }
        return microBatch;
    }

    /** Without checkpointing: every layer's arrays and dequantized weights stay until the step's backward is done. */
    private static String everyLayerKept(Setup setup, ForwardBytes forward, List<Component> parts) {
        ModelConfig c = setup.config();
        int layers = c.numHiddenLayers();
        long activations = 0;
        long dequantized = 0;
        for (int i = 0; i < layers; i++) {
            activations += forward.decoderLayer(i, true);
            dequantized += forward.dequantizedWeights(i);
        }
        parts.add(new Component("activations (every layer)", activations, layers + " layers x "
                + mib(activations / layers) + " kept for backward, attention scores [B, heads, T, T] included"));
        if (dequantized > 0) {
            parts.add(new Component("dequantized weights (every layer)", dequantized,
                    "autograd keeps each W for the gradient of x W^T"));
        }
        addDoraDropoutWeights(setup, parts, layers, false);
        long targets = setup.targets();
        parts.add(new Component("logits and loss at targets", forward.head(targets, true) + forward.loadBalancing(),
                count(targets) + " positions x " + c.vocabSize() + " vocab, fp32 log-softmax"));
        long backward = Math.max(forward.headBackward(targets), forward.layerBackward(layers - 1, false));
        parts.add(new Component("backward working memory", backward, "gradients in flight at the widest op"));
        return "backward, with every layer's activations kept";
    }

    /**
     * CheckpointedBackward: each layer's input kept, then the widest of three moments: the forward through one layer
     * (no autograd), the head's forward and backward, one layer recomputed under autograd with its backward.
     */
    private static String oneLayerAtATime(Setup setup, ForwardBytes forward, List<Component> parts) {
        ModelConfig c = setup.config();
        int layers = c.numHiddenLayers();
        long n = forward.tokens();
        long h = c.hiddenSize();
        int s = setup.computeBytes();
        String dtype = s == 4 ? "fp32" : "fp16";
        long inputs = layers * n * h * 4 + (c.isMixtureOfExperts() ? layers * n * c.numLocalExperts() * s : 0);
        parts.add(new Component("layer inputs (checkpoints)", inputs, layers + " x [" + setup.rows() + " x "
                + setup.length() + ", " + h + "] fp32 (the residual stream)"
                + (c.isMixtureOfExperts() ? " and router logits in " + dtype : "")));
        long forwardLayer = 0;
        long recomputedLayer = 0;
        long dequantized = 0;
        long outputGradients = 0;
        long layerBackward = 0;
        for (int i = 0; i < layers; i++) {
            layerBackward = Math.max(layerBackward, forward.layerBackward(i, true));
            forwardLayer = Math.max(forwardLayer, forward.decoderLayer(i, false));
            recomputedLayer = Math.max(recomputedLayer, forward.decoderLayer(i, true));
            dequantized = Math.max(dequantized, forward.largestDequantizedWeight(i));
            outputGradients = Math.max(outputGradients, forward.recomputedOutputs(i));
        }
        long targets = setup.targets();
        long upstream = 2 * n * h * 4; // the last output's gradient, and the objective sum(out x upstream), float32
        long headMoment = forward.head(targets, true) + forward.headBackward(targets);
        long recomputeMoment = recomputedLayer + dequantized + outputGradients + layerBackward + upstream;
        long forwardMoment = forwardLayer + dequantized;
        if (headMoment >= recomputeMoment && headMoment >= forwardMoment) {
            parts.add(new Component("logits and loss at targets", forward.head(targets, true),
                    count(targets) + " positions x " + c.vocabSize() + " vocab, fp32 log-softmax"));
            parts.add(new Component("backward working memory", forward.headBackward(targets),
                    "one chunk of the head's float32 softmax or its gradients"));
            return "the head's backward (lm_head and loss)";
        }
        if (recomputeMoment >= forwardMoment) {
            parts.add(new Component("activations (one layer recomputed)", recomputedLayer + upstream,
                    "all its arrays, attention scores [B, heads, T, T] included"));
            if (dequantized > 0) {
                parts.add(new Component("dequantized weight (one linear)", dequantized, "the largest NF4 weight in "
                        + dtype + ", dequantized again for its input's gradient and freed (as bitsandbytes)"));
                parts.add(new Component("NF4 outputs and their gradients", outputGradients,
                        "leaves where the recompute cuts x W^T out of the layer's graph"));
            }
            addDoraDropoutWeights(setup, parts, layers, true);
            parts.add(new Component("backward working memory", layerBackward,
                    "gradients in flight at the widest op"));
            return "backward through a recomputed layer";
        }
        parts.add(new Component("activations (one layer)", forwardLayer, "the forward without autograd"));
        if (dequantized > 0) {
            parts.add(new Component("dequantized weight (one linear)", dequantized, "the largest NF4 weight in "
                    + dtype + ", freed after its x W^T"));
        }
        return "the forward through one layer";
    }

    /**
     * DoRA with dropout recomputes the base output on the dropped input (x' W^T, PEFT's DoraLinearVariant.forward),
     * whose backward keeps W in float32: every layer's without checkpointing, one layer's with it.
     */
    private static void addDoraDropoutWeights(Setup setup, List<Component> parts, int layers, boolean oneLayer) {
        if (!(setup.lora().useDora() && setup.lora().dropout() > 0)) {
            return;
        }
        LinearLayers linears = LinearLayers.of(setup.config(), setup.nf4(), setup.lora());
        long bytes = 0;
        for (int i = 0; i < layers; i++) {
            bytes = oneLayer ? Math.max(bytes, linears.doraDropoutWeightBytes(i))
                    : bytes + linears.doraDropoutWeightBytes(i);
        }
        if (bytes > 0) {
            parts.add(new Component("DoRA dropout base weights (fp32)", bytes, "W kept for the gradient of x' W^T "
                    + "on the dropped input, as PEFT, " + (oneLayer ? "one layer's (checkpointing)" : "every layer's")));
        }
    }

    /** A parameter count as people write it: 46.70B, 240.1M, 221,184. */
    public static String count(long n) {
        if (n >= 1_000_000_000L) {
            return String.format(Locale.ROOT, "%.2fB", n / 1e9);
        }
        if (n >= 1_000_000L) {
            return String.format(Locale.ROOT, "%.1fM", n / 1e6);
        }
        return String.format(Locale.ROOT, "%,d", n);
    }

    static String mib(long bytes) {
        return String.format(Locale.ROOT, "%.1f MiB", bytes / (double) (1 << 20));
    }
}
