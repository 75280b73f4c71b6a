package io.mixtune.merging;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import io.mixtune.model.safetensors.TensorInfo;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Weighted sums of PEFT LoRA adapters, exact: sum_i c_i s_i B_i A_i = B' A' with the ranks concatenated,
 * A' = [c_1 s_1 A_1; ...; c_n s_n A_n] (stacked rows) and B' = [B_1 ... B_n] (side by side), at scale 1. Averaging A and
 * B separately would give (sum c_i B_i)(sum c_i A_i), which has cross terms B_i A_j and is not the average of the
 * adapted models. The output rank is the sum of the ranks; {@link LowRankCompression} can cut it to a target rank by
 * SVD, reporting the error. PEFT loads the result: lora_alpha equals r (scale 1), per module through rank_pattern and
 * alpha_pattern where the summed ranks differ between modules.
 */
final class AdapterAverage implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * One input adapter, checked.
     *
     * @param headShape a reward model's score head [1, hidden] (PEFT modules_to_save), or null for a causal LM's adapter
     */
    private record Input(Path dir, LoraConfig config, String baseModel, SafetensorsReader reader, DType dtype,
            Map<String, long[]> moduleShapes, long[] headShape) {}

    /** Per-module outcome of the SVD re-compression. */
    record Compression(int modules, int compressed, double maxError, double meanError) {}

    private final List<Input> inputs;
    private final Map<String, long[]> modules;

    private AdapterAverage(List<Input> inputs) {
        this.inputs = inputs;
        Map<String, long[]> all = new TreeMap<>();
        inputs.forEach(input -> input.moduleShapes().forEach(all::putIfAbsent));
        this.modules = all;
    }

    /** Opens and checks every adapter before anything is written. */
    static AdapterAverage open(List<Path> dirs, boolean identicalConfigs) {
        List<Input> inputs = new ArrayList<>();
        try {
            for (Path dir : dirs) {
                inputs.add(read(dir));
            }
            for (int i = 1; i < inputs.size(); i++) {
                requireCompatible(inputs.get(0), inputs.get(i), identicalConfigs);
            }
            CompanionFiles.requireSameTokenizer(dirs, null);
            return new AdapterAverage(inputs);
        } catch (RuntimeException e) {
            inputs.forEach(input -> input.reader().close());
            throw e;
        }
    }

    int moduleCount() {
        return modules.size();
    }

    /**
     * Writes sum_i coefficients[i] * (adapter i's delta) into {@code dir} as a PEFT adapter.
     *
     * @param targetRank re-compress modules whose summed rank exceeds it, or null to keep the exact sum
     * @param dtype the dtype of the written A and B, or null for the inputs'
     */
    Compression write(double[] coefficients, Integer targetRank, DType dtype, Path dir) {
        Map<String, float[][]> factors = new LinkedHashMap<>();
        Map<String, Integer> ranks = new LinkedHashMap<>();
        int compressed = 0;
        double maxError = 0;
        double errorSum = 0;
        for (Map.Entry<String, long[]> module : modules.entrySet()) {
            int out = (int) module.getValue()[0];
            int in = (int) module.getValue()[1];
            float[][] concatenated = concatenate(module.getKey(), coefficients, out, in);
            int rank = concatenated[1].length / in;
            if (targetRank != null && rank > targetRank) {
                LowRankCompression.Result cut = LowRankCompression.truncate(concatenated[0], concatenated[1], out, in,
                        rank, targetRank);
                concatenated = new float[][] {cut.b(), cut.a()};
                rank = cut.rank();
                compressed++;
                maxError = Math.max(maxError, cut.relativeError());
                errorSum += cut.relativeError();
            }
            factors.put(module.getKey(), concatenated);
            ranks.put(module.getKey(), rank);
        }
        LoraConfig config = outputConfig(ranks);
        DType written = dtype == null ? inputs.get(0).dtype() : dtype;
        List<TensorSpec> specs = new ArrayList<>();
        Map<String, float[]> data = new HashMap<>();
        TreeSet<String> targets = new TreeSet<>();
        factors.forEach((module, f) -> {
            long[] shape = modules.get(module);
            int rank = ranks.get(module);
            specs.add(new TensorSpec(PeftAdapter.aKey(module), written, new long[] {rank, shape[1]}));
            specs.add(new TensorSpec(PeftAdapter.bKey(module), written, new long[] {shape[0], rank}));
            data.put(PeftAdapter.aKey(module), f[1]);
            data.put(PeftAdapter.bKey(module), f[0]);
            targets.add(module.substring(module.lastIndexOf('.') + 1));
        });
        long[] headShape = inputs.get(0).headShape();
        if (headShape != null) {
            // A reward model's head is a full linear layer: its weighted sum is the average's head (WARM, Rame et
            // al. 2024, averages every weight linearly; only LoRA's factors need the rank concatenation).
            String key = PeftAdapter.moduleToSaveKey(PeftAdapter.SCORE_HEAD);
            float[] head = new float[Math.toIntExact(headShape[0] * headShape[1])];
            for (int i = 0; i < inputs.size(); i++) {
                float[] member = inputs.get(i).reader().readFloats(key);
                for (int j = 0; j < head.length; j++) {
                    head[j] += (float) (coefficients[i] * member[j]);
                }
            }
            specs.add(new TensorSpec(key, written, headShape));
            data.put(key, head);
        }
        PeftAdapter.write(dir, config, List.copyOf(targets), headShape == null ? List.of()
                : List.of(PeftAdapter.SCORE_HEAD), inputs.get(0).baseModel(), specs, spec -> data.get(spec.name()));
        return new Compression(factors.size(), compressed, maxError, compressed == 0 ? 0 : errorSum / compressed);
    }

    /**
     * sum_i coefficients[i] * (adapter i's delta) in memory, as {@link #write} writes it without re-compression: the
     * config (scale 1) and, per module, A' [R, in] then B' [out, R].
     */
    Composed compose(double[] coefficients) {
        Map<String, float[][]> factors = new LinkedHashMap<>();
        Map<String, Integer> ranks = new LinkedHashMap<>();
        for (Map.Entry<String, long[]> module : modules.entrySet()) {
            int in = (int) module.getValue()[1];
            float[][] concatenated = concatenate(module.getKey(), coefficients, (int) module.getValue()[0], in);
            factors.put(module.getKey(), new float[][] {concatenated[1], concatenated[0]});
            ranks.put(module.getKey(), concatenated[1].length / in);
        }
        return new Composed(outputConfig(ranks), factors);
    }

    /** A composed adapter in memory: its config and, per module name, {A [r, in], B [out, r]} row-major. */
    record Composed(LoraConfig config, Map<String, float[][]> factors) {}

    /**
     * Refuses adapters that adapt different modules, naming one module that is in one and not the other (a
     * composition of them would adapt the union, which none of them was trained as).
     */
    void requireSameModules() {
        Input first = inputs.get(0);
        for (Input other : inputs.subList(1, inputs.size())) {
            for (Input[] pair : new Input[][] {{first, other}, {other, first}}) {
                for (String module : pair[0].moduleShapes().keySet()) {
                    if (!pair[1].moduleShapes().containsKey(module)) {
                        throw new IllegalArgumentException("the adapters " + first.dir() + " and " + other.dir()
                                + " adapt different modules: " + module + " in " + pair[0].dir() + " but not in "
                                + pair[1].dir() + " (target_modules " + first.config().targetModules() + " and "
                                + other.config().targetModules() + "); compose adapters with one set of targets");
                    }
                }
            }
        }
    }

    /** B' [out, R] = [B_1 ... B_n] and A' [R, in] = [c_1 s_1 A_1; ...] over the adapters that adapt the module. */
    private float[][] concatenate(String module, double[] coefficients, int out, int in) {
        List<float[]> as = new ArrayList<>();
        List<float[]> bs = new ArrayList<>();
        List<Integer> rs = new ArrayList<>();
        for (int i = 0; i < inputs.size(); i++) {
            Input input = inputs.get(i);
            if (!input.moduleShapes().containsKey(module)) {
                continue;
            }
            double factor = coefficients[i] * input.config().scaleOf(module);
            float[] a = input.reader().readFloats(PeftAdapter.aKey(module));
            for (int j = 0; j < a.length; j++) {
                a[j] = (float) (factor * a[j]);
            }
            as.add(a);
            bs.add(input.reader().readFloats(PeftAdapter.bKey(module)));
            rs.add(a.length / in);
        }
        int total = rs.stream().mapToInt(Integer::intValue).sum();
        float[] a = new float[total * in];
        float[] b = new float[out * total];
        int offset = 0;
        for (int k = 0; k < as.size(); k++) {
            int r = rs.get(k);
            System.arraycopy(as.get(k), 0, a, offset * in, r * in);
            for (int row = 0; row < out; row++) {
                System.arraycopy(bs.get(k), row * r, b, row * total + offset, r);
            }
            offset += r;
        }
        return new float[][] {b, a};
    }

    /** Scale 1 everywhere: lora_alpha = r, and per module alpha = rank where the rank differs from the common one. */
    private static LoraConfig outputConfig(Map<String, Integer> ranks) {
        Map<Integer, Integer> frequency = new TreeMap<>();
        ranks.values().forEach(rank -> frequency.merge(rank, 1, Integer::sum));
        int common = frequency.entrySet().stream().max(Map.Entry.comparingByValue()).orElseThrow().getKey();
        Map<String, Integer> rankPattern = new TreeMap<>();
        Map<String, Double> alphaPattern = new TreeMap<>();
        ranks.forEach((module, rank) -> {
            if (rank != common) {
                // PEFT matches pattern keys as regexes against the end of the module name: escape the dots.
                String key = module.replace(".", "\\.");
                rankPattern.put(key, rank);
                alphaPattern.put(key, (double) rank);
            }
        });
        TreeSet<String> targets = new TreeSet<>();
        ranks.keySet().forEach(module -> targets.add(module.substring(module.lastIndexOf('.') + 1)));
        return new LoraConfig(common, common, 0.0, List.copyOf(targets), false, rankPattern, alphaPattern);
    }

    private static Input read(Path dir) {
        Path configFile = dir.resolve(PeftAdapter.CONFIG_FILE);
        Path weightsFile = PeftAdapter.weightsFile(dir);
        JsonNode raw;
        try {
            raw = JSON.readTree(configFile.toFile());
        } catch (IOException e) {
            throw new IllegalArgumentException(configFile + ": not valid JSON: " + e.getMessage());
        }
        boolean rewardModel = false;
        for (JsonNode module : raw.path("modules_to_save")) {
            rewardModel |= module.asText().equals(PeftAdapter.SCORE_HEAD);
        }
        String headKey = PeftAdapter.moduleToSaveKey(PeftAdapter.SCORE_HEAD);
        LoraConfig config = PeftAdapter.readConfig(configFile, rewardModel ? Set.of(PeftAdapter.SCORE_HEAD) : Set.of());
        if (config.useDora()) {
            // Ranks concatenated (compose) hold A and B only: a magnitude rescales its own W + B A, nothing else.
            throw new IllegalArgumentException(configFile + ": use_dora is true: a DoRA adapter's magnitudes rescale"
                    + " its own W + scale B A, so they do not combine with other adapters; fold it into its base first"
                    + " (mixtune merge-adapter) and merge the checkpoints");
        }
        if (raw.path("target_parameters").size() > 0) {
            throw new IllegalArgumentException(configFile + ": target_parameters " + raw.get("target_parameters")
                    + ": adapters on fused expert parameters cannot be concatenated by rank; load the adapter with"
                    + " mixtune and save it again (per-expert layout) first");
        }
        String baseModel = raw.path("base_model_name_or_path").asText("");
        SafetensorsReader reader = SafetensorsReader.open(weightsFile);
        try {
            Map<String, long[]> shapes = new TreeMap<>();
            DType dtype = null;
            long[] headShape = null;
            if (rewardModel) {
                if (!reader.contains(headKey)) {
                    throw new IllegalArgumentException(weightsFile + ": a reward model's adapter (modules_to_save "
                            + "score) without " + headKey);
                }
                headShape = reader.info(headKey).shape();
            }
            for (String key : reader.names()) {
                String module = PeftAdapter.moduleOf(key);
                if (rewardModel && key.equals(headKey)) {
                    continue;
                }
                if (module == null) {
                    throw new IllegalArgumentException(weightsFile + ": tensor '" + key + "' is not a LoRA weight"
                            + " (expected base_model.model.<module>.lora_A.weight or .lora_B.weight)");
                }
                TensorInfo info = reader.info(key);
                if (dtype != null && info.dtype() != dtype) {
                    throw new IllegalArgumentException(weightsFile + ": tensor '" + key + "' is " + info.dtype()
                            + " but others are " + dtype + ": expected one dtype");
                }
                dtype = info.dtype();
                if (!key.endsWith(".lora_A.weight")) {
                    continue;
                }
                if (!reader.contains(PeftAdapter.bKey(module))) {
                    throw new IllegalArgumentException(weightsFile + ": module " + module + " has lora_A but no lora_B");
                }
                long[] a = info.shape();
                long[] b = reader.info(PeftAdapter.bKey(module)).shape();
                int rank = config.rankOf(module);
                if (a.length != 2 || b.length != 2 || a[0] != rank || b[1] != rank) {
                    throw new IllegalArgumentException(weightsFile + ": module " + module + ": lora_A "
                            + Arrays.toString(a) + " and lora_B " + Arrays.toString(b) + ", expected [" + rank
                            + ", in] and [out, " + rank + "] (rank " + rank + " from " + PeftAdapter.CONFIG_FILE + ")");
                }
                shapes.put(module, new long[] {b[0], a[1]});
            }
            for (String key : reader.names()) {
                String module = PeftAdapter.moduleOf(key);
                if (key.endsWith(".lora_B.weight") && !shapes.containsKey(module)) {
                    throw new IllegalArgumentException(weightsFile + ": module " + module + " has lora_B but no lora_A");
                }
            }
            if (shapes.isEmpty()) {
                throw new IllegalArgumentException(weightsFile + ": holds no LoRA weights");
            }
            if (!dtype.isFloat32Convertible()) {
                throw new IllegalArgumentException(weightsFile + ": LoRA weights are " + dtype
                        + "; expected F32, F16 or BF16");
            }
            return new Input(dir, config, baseModel, reader, dtype, shapes, headShape);
        } catch (RuntimeException e) {
            reader.close();
            throw e;
        }
    }

    private static void requireCompatible(Input first, Input other, boolean identicalConfigs) {
        if (identicalConfigs && !withoutDropout(first.config()).equals(withoutDropout(other.config()))) {
            throw new IllegalArgumentException(other.dir().resolve(PeftAdapter.CONFIG_FILE) + ": " + other.config()
                    + " differs from " + first.config() + " in " + first.dir().resolve(PeftAdapter.CONFIG_FILE)
                    + ": warm averages adapters trained from one initialisation with one config");
        }
        if (first.dtype() != other.dtype()) {
            throw new IllegalArgumentException(other.dir().resolve(PeftAdapter.WEIGHTS_FILE) + ": LoRA weights are "
                    + other.dtype() + " but " + first.dtype() + " in " + first.dir().resolve(PeftAdapter.WEIGHTS_FILE)
                    + ": convert the inputs to one dtype first");
        }
        if ((first.headShape() == null) != (other.headShape() == null)) {
            Input reward = first.headShape() != null ? first : other;
            Input causal = first.headShape() != null ? other : first;
            throw new IllegalArgumentException(reward.dir() + " is a reward model (a score head) but " + causal.dir()
                    + " is a causal LM's adapter: average reward models with reward models");
        }
        if (first.headShape() != null && !Arrays.equals(first.headShape(), other.headShape())) {
            throw new IllegalArgumentException(other.dir().resolve(PeftAdapter.WEIGHTS_FILE) + ": score head "
                    + Arrays.toString(other.headShape()) + " but " + Arrays.toString(first.headShape()) + " in "
                    + first.dir().resolve(PeftAdapter.WEIGHTS_FILE) + ": the reward models have different heads");
        }
        other.moduleShapes().forEach((module, shape) -> {
            long[] expected = first.moduleShapes().get(module);
            if (expected != null && !Arrays.equals(expected, shape)) {
                throw new IllegalArgumentException(other.dir().resolve(PeftAdapter.WEIGHTS_FILE) + ": module " + module
                        + " is [out, in] = " + Arrays.toString(shape) + " but " + Arrays.toString(expected) + " in "
                        + first.dir().resolve(PeftAdapter.WEIGHTS_FILE) + ": the adapters are for different models");
            }
        });
        requireSameArchitecture(first, other);
    }

    /** LoRA dropout is how a member was trained, not what it computes: WARM varies it between members on purpose. */
    private static LoraConfig withoutDropout(LoraConfig config) {
        return new LoraConfig(config.r(), config.alpha(), 0, config.targetModules(), config.useRslora(),
                config.rankPattern(), config.alphaPattern(), config.selection());
    }

    /**
     * Adapters of one base may adapt different modules (the sum is then the union, each adapter adding nothing where
     * it has no module, as PEFT's add_weighted_adapter unions target_modules) and differ in r, alpha and rsLoRA (the
     * ranks concatenate, as its "cat"). What no single model can hold is refused, since the average would then load on
     * neither: a dense MLP in one (mlp.gate_proj) and experts in the other (block_sparse_moe.experts.N.w1), different
     * expert sets in one layer, or different hidden sizes read off modules the two do not share (q_proj's input in
     * one, v_proj's in the other). base_model_name_or_path is not compared: it is where the base lay when the adapter
     * was saved (mixtune writes its local path), and one model sits at many paths; neither PEFT, which averages
     * adapters of the one model it holds, nor mergekit compares it.
     */
    private static void requireSameArchitecture(Input first, Input other) {
        Architecture a = Architecture.of(first.moduleShapes());
        Architecture b = Architecture.of(other.moduleShapes());
        String differs = null;
        if (a.mlpModule() != null && b.mlpModule() != null && a.experts() != b.experts()) {
            differs = "a " + (a.experts() ? "mixture of experts" : "dense MLP") + " (" + a.mlpModule() + ") in "
                    + first.dir() + " but a " + (b.experts() ? "mixture of experts" : "dense MLP") + " ("
                    + b.mlpModule() + ") in " + other.dir();
        } else if (a.hiddenModule() != null && b.hiddenModule() != null && a.hiddenSize() != b.hiddenSize()) {
            differs = "hidden size " + a.hiddenSize() + " (" + a.hiddenModule() + ") in " + first.dir() + " but "
                    + b.hiddenSize() + " (" + b.hiddenModule() + ") in " + other.dir();
        } else {
            for (Map.Entry<String, TreeSet<Integer>> layer : b.expertSets().entrySet()) {
                TreeSet<Integer> expected = a.expertSets().get(layer.getKey());
                if (expected != null && !expected.equals(layer.getValue())) {
                    differs = layer.getKey() + " has experts " + expected + " in " + first.dir() + " but "
                            + layer.getValue() + " in " + other.dir();
                    break;
                }
            }
        }
        if (differs != null) {
            throw new IllegalArgumentException("the adapters " + first.dir() + " and " + other.dir() + " are for "
                    + "different models: " + differs + "; their average would load on neither");
        }
    }

    /** What an adapter's modules say about its model. */
    private record Architecture(boolean experts, String mlpModule, long hiddenSize, String hiddenModule,
            Map<String, TreeSet<Integer>> expertSets) {
        private static final Pattern EXPERT = Pattern.compile("(.*\\.block_sparse_moe\\.experts)\\.(\\d+)\\.(w1|w2|w3)");
        /** Layers whose input is the hidden state, and those whose output is. */
        private static final Set<String> READS_HIDDEN = Set.of("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj",
                "w1", "w3", "gate", "lm_head");
        private static final Set<String> WRITES_HIDDEN = Set.of("o_proj", "down_proj", "w2");

        static Architecture of(Map<String, long[]> moduleShapes) {
            String mlpModule = null;
            boolean experts = false;
            long hiddenSize = -1;
            String hiddenModule = null;
            Map<String, TreeSet<Integer>> expertSets = new TreeMap<>();
            for (Map.Entry<String, long[]> entry : moduleShapes.entrySet()) {
                String module = entry.getKey();
                String leaf = module.substring(module.lastIndexOf('.') + 1);
                Matcher expert = EXPERT.matcher(module);
                if (expert.matches()) {
                    expertSets.computeIfAbsent(expert.group(1) + ".*." + expert.group(3), k -> new TreeSet<>())
                            .add(Integer.parseInt(expert.group(2)));
                }
                boolean moe = module.contains(".block_sparse_moe.");
                if (mlpModule == null && (moe || module.contains(".mlp."))) {
                    mlpModule = module;
                    experts = moe;
                }
                if (hiddenModule == null && (READS_HIDDEN.contains(leaf) || WRITES_HIDDEN.contains(leaf))) {
                    hiddenModule = module + (READS_HIDDEN.contains(leaf) ? " in" : " out");
                    hiddenSize = READS_HIDDEN.contains(leaf) ? entry.getValue()[1] : entry.getValue()[0];
                }
            }
            return new Architecture(experts, mlpModule, hiddenSize, hiddenModule, expertSets);
        }
    }

    @Override
    public void close() {
        inputs.forEach(input -> input.reader().close());
    }
}
