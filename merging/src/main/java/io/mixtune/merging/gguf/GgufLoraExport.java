package io.mixtune.merging.gguf;

import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.PathOverlap;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.TensorInfo;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.regex.Matcher;

/**
 * A LoRA adapter (PEFT format) as a GGUF LoRA adapter, what llama.cpp's convert_lora_to_gguf.py writes for it:
 * llama.cpp ({@code --lora FILE}) and Ollama (Modelfile {@code ADAPTER}) add it to a GGUF base at run time, so one
 * base file serves many adapters. Each module's A and B are written as {@code <llama.cpp name>.lora_a} and
 * {@code .lora_b}, the base model's tensor names ({@link GgufExport}); the converter's LlamaModel.modify_tensors runs
 * on them through its LoraTorchTensor, so q_proj and k_proj get only B's rows permuted (a row permutation of B A is
 * one of B) and a Mixtral layer's per-expert A and B are stacked into the 3-D {@code ffn_*_exps} tensors. Metadata:
 * general.type "adapter", adapter.type "lora" and adapter.lora.alpha, nothing of the model but its architecture
 * (LoraModel overrides set_gguf_parameters and set_vocab). llama.cpp scales each tensor pair by alpha / its rank
 * (llama-adapter.cpp); where PEFT's scale differs (rsLoRA, an alpha_pattern), which the converter ignores, the ratio
 * is folded into B so that llama.cpp applies PEFT's delta. Refused: what llama.cpp cannot apply or the converter exits
 * on (DoRA's magnitudes, modules trained in full, a Mixtral layer whose experts are not all targeted).
 */
public final class GgufLoraExport {

    private final Path model;
    private final Path adapter;
    private final Path out;
    private GgufFileType type = GgufFileType.F32;
    private boolean force;
    private String name;

    private GgufLoraExport(Path model, Path adapter, Path out) {
        this.model = Objects.requireNonNull(model, "model");
        this.adapter = Objects.requireNonNull(adapter, "adapter");
        this.out = Objects.requireNonNull(out, "out");
    }

    /**
     * @param model the base model's directory: only its config.json is read (the converter's {@code --base})
     * @param adapter the LoRA adapter (PEFT format)
     * @param out the .gguf file to write
     */
    public static GgufLoraExport of(Path model, Path adapter, Path out) {
        return new GgufLoraExport(model, adapter, out);
    }

    /** f32 (the converter's default), f16 or q8_0 (rows that are not whole blocks fall back to f16, as there). */
    public GgufLoraExport type(GgufFileType value) {
        if (value != GgufFileType.F32 && value != GgufFileType.F16 && value != GgufFileType.Q8_0) {
            throw new IllegalArgumentException("--type " + value.cliName() + " is not one convert_lora_to_gguf.py "
                    + "writes; expected f32, f16 or q8_0");
        }
        this.type = value;
        return this;
    }

    /** Replace an existing {@code out}. */
    public GgufLoraExport force(boolean replace) {
        this.force = replace;
        return this;
    }

    /** general.name; default: the adapter folder's name as the converter titles it ("adapter": "Adapter"). */
    public GgufLoraExport name(String value) {
        this.name = value;
        return this;
    }

    /**
     * @param tensors each tensor's GGUF name and type, in file order
     * @param bytes the file's size
     */
    public record Result(Path out, GgufFileType type, Map<String, GgmlType> tensors, long bytes) {}

    /** One module's A [r, in] and B [out, r] in the adapter file, and the factor B is written times (1: as it is). */
    private record Pair(String module, TensorInfo a, TensorInfo b, float factor) {}

    /**
     * @throws IllegalArgumentException for what the user must fix: an out that is, holds or lies inside an input, an
     *     existing out without force, an adapter llama.cpp cannot apply as it is; nothing is written then
     */
    public Result run() {
        for (Path input : List.of(model, adapter)) {
            String problem = PathOverlap.problem("--out", out, input);
            if (problem != null) {
                throw new IllegalArgumentException(problem);
            }
        }
        if (Files.isDirectory(out)) {
            throw new IllegalArgumentException("--out " + out + " is a directory; expected the .gguf file to write");
        }
        if (Files.exists(out, LinkOption.NOFOLLOW_LINKS) && !force) {
            throw new IllegalArgumentException("--out " + out + " exists; choose another --out, or pass --force to"
                    + " replace it");
        }
        ModelConfig config = ModelConfig.read(model.resolve("config.json"));
        Path configFile = adapter.resolve(PeftAdapter.CONFIG_FILE);
        if (PeftAdapter.isRewardModel(configFile)) {
            throw new IllegalArgumentException(adapter + " is a reward model's adapter (a score head in"
                    + " modules_to_save), which llama.cpp cannot apply; export a causal LM's adapter");
        }
        LoraConfig lora = PeftAdapter.readConfig(configFile);
        if (lora.useDora()) {
            throw new IllegalArgumentException(configFile + ": use_dora is true; llama.cpp applies no DoRA magnitude"
                    + " (convert_lora_to_gguf.py exits on lora_magnitude_vector): fold it in with `mixtune"
                    + " export-gguf --model " + model + " --adapter " + adapter + "` instead");
        }
        try (SafetensorsReader weights = SafetensorsReader.open(PeftAdapter.weightsFile(adapter))) {
            GgufWriter writer = new GgufWriter();
            Map<String, GgmlType> types = planTensors(writer, weights, lora, config);
            writer.putString("general.architecture", "llama");
            writer.putString("general.type", "adapter");
            writer.putString("adapter.type", "lora");
            String folder = adapter.toAbsolutePath().normalize().getFileName().toString();
            writer.putString("general.name", name != null ? name : GgufExport.title(folder));
            writer.putFloat32("adapter.lora.alpha", (float) lora.alpha());
            writer.putUint32("general.quantization_version", 2); // GGML_QUANT_VERSION
            StagedGgufFile.write(writer, out);
            return new Result(out, type, types, Files.size(out));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + out + ": " + e.getMessage(), e);
        }
    }

    /**
     * The converter's order: modules as their first tensor comes in the file (safetensors' get_tensors reads in data
     * order), a Mixtral layer's experts stacked where the last of its 3 x num_local_experts modules comes (w1, w2, w3:
     * LlamaModel.modify_tensors), each A before its B.
     */
    private Map<String, GgmlType> planTensors(GgufWriter writer, SafetensorsReader weights, LoraConfig lora,
            ModelConfig config) {
        List<String> problems = new ArrayList<>();
        Map<String, TensorInfo[]> modules = new LinkedHashMap<>();
        List<String> keys = new ArrayList<>(weights.names());
        keys.sort(Comparator.comparingLong((String key) -> weights.info(key).dataOffset()).thenComparing(key -> key));
        for (String key : keys) {
            String module = PeftAdapter.moduleOf(key);
            if (module == null && key.endsWith(".base_layer.weight")) {
                continue; // PEFT saves a targeted lm_head's base weight beside its A and B; the GGUF base has it
            }
            if (module == null) {
                problems.add(key + " is not a lora_A or lora_B weight (convert_lora_to_gguf.py exits on it; a module"
                        + " trained in full or a DoRA magnitude has no place in a GGUF LoRA adapter: fold it in with"
                        + " export-gguf --adapter)");
                continue;
            }
            TensorInfo info = weights.info(key);
            if (!info.dtype().isFloat32Convertible() || info.shape().length != 2) {
                problems.add(key + " is " + info.dtype() + " " + Arrays.toString(info.shape())
                        + " (expected a matrix of F32, F16 or BF16)");
                continue;
            }
            if (info.dtype() == DType.F16 && type == GgufFileType.Q8_0) {
                // the converter quantizes F16 tensors in float16 arithmetic, which mixtune's encoder does not
                problems.add(key + " is F16, which --type q8_0 does not take; export --type f16 or f32");
                continue;
            }
            modules.computeIfAbsent(module, m -> new TensorInfo[2])[key.endsWith(".lora_A.weight") ? 0 : 1] = info;
        }
        Map<String, long[]> linears = MistralCheckpoint.linearShapes(config);
        Map<String, GgmlType> types = new LinkedHashMap<>();
        Map<Integer, TreeMap<String, Pair>> expertsByLayer = new TreeMap<>();
        for (Map.Entry<String, TensorInfo[]> entry : modules.entrySet()) {
            String module = entry.getKey();
            TensorInfo a = entry.getValue()[0];
            TensorInfo b = entry.getValue()[1];
            if (a == null || b == null) {
                problems.add(module + " has " + (a == null ? "lora_B but no lora_A" : "lora_A but no lora_B"));
                continue;
            }
            if (!PeftAdapter.appliesTo(lora, module)) {
                // PEFT drops them unused, llama.cpp would apply them: refused as merge-adapter refuses them
                problems.add(module + "'s weights, which the adapter's config does not select");
                continue;
            }
            int rank = Math.toIntExact(a.shape()[0]);
            if (b.shape()[1] != rank) {
                problems.add(module + ": A " + Arrays.toString(a.shape()) + " and B "
                        + Arrays.toString(b.shape()) + " differ in rank");
                continue;
            }
            if (lora.rankOf(module) != rank) {
                problems.add(module + ": the config gives rank " + lora.rankOf(module) + ", its lora_A has " + rank);
                continue;
            }
            // only --model's config.json is read: its shapes are what finds a wrong base here, where llama.cpp
            // would refuse the file only when loading it ("incorrect shape", llama-adapter.cpp)
            long[] weight = linears.get(module);
            if (weight == null) {
                problems.add(module.equals("lm_head") && config.tieWordEmbeddings() ? "lm_head: " + model
                        + "'s config.json ties it to embed_tokens (tie_word_embeddings), so the base GGUF has no"
                        + " output.weight for llama.cpp to apply it to; fold it in with export-gguf --adapter"
                        : module + " is not a linear layer of " + model + "'s config.json (wrong --model?)");
                continue;
            }
            if (b.shape()[0] != weight[0] || a.shape()[1] != weight[1]) {
                problems.add(module + ": lora_A " + Arrays.toString(a.shape()) + " and lora_B "
                        + Arrays.toString(b.shape()) + " do not fit its weight " + Arrays.toString(weight) + " in "
                        + model + "'s config.json (wrong --model?)");
                continue;
            }
            float factor = scaleFactor(lora, module, rank);
            Pair pair = new Pair(module, a, b, factor);
            String hfName = module + ".weight";
            if (hfName.equals("lm_head.weight")) {
                add(writer, weights, types, "output.weight", List.of(pair), 0);
                continue;
            }
            Matcher layer = GgufExport.LAYER.matcher(hfName);
            String part = layer.matches() ? layer.group(2) : null;
            if (part == null) {
                problems.add(module + " has no llama.cpp tensor a GGUF LoRA adapter can name");
                continue;
            }
            int block = Integer.parseInt(layer.group(1));
            Matcher expert = GgufExport.EXPERT.matcher(part);
            if (expert.matches()) {
                TreeMap<String, Pair> experts = expertsByLayer.computeIfAbsent(block, k -> new TreeMap<>());
                experts.put(part, pair);
                if (experts.size() == 3 * config.numLocalExperts()) {
                    for (String w : List.of("w1", "w2", "w3")) {
                        addExperts(writer, weights, types, experts, config, block, w, problems);
                    }
                    expertsByLayer.remove(block);
                }
                continue;
            }
            String mapped = GgufExport.LAYER_NAMES.get(part);
            if (mapped == null) {
                problems.add(module + " has no llama.cpp tensor a GGUF LoRA adapter can name");
                continue;
            }
            int heads = part.equals("self_attn.q_proj") ? config.numAttentionHeads()
                    : part.equals("self_attn.k_proj") ? config.numKeyValueHeads() : 0;
            add(writer, weights, types, "blk." + block + "." + mapped + ".weight", List.of(pair), heads);
        }
        expertsByLayer.forEach((block, experts) -> problems.add("layer " + block + " has LoRA on " + experts.size()
                + " expert weights where llama.cpp's stacked ffn_*_exps need all " + 3 * config.numLocalExperts()
                + " (w1, w2 and w3 of " + config.numLocalExperts() + " experts; the converter's \"Unprocessed"
                + " experts\"): target all of w1, w2 and w3, or fold it in with export-gguf --adapter"));
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException(adapter + ": " + String.join("; ", problems));
        }
        return types;
    }

    /**
     * What B is multiplied by so that llama.cpp's scale, adapter.lora.alpha / rank in float (llama_adapter_lora_weight::
     * get_scale), gives PEFT's: 1 where they agree (plain LoRA, rank_pattern), which keeps the converter's bytes;
     * PEFT's scale / llama.cpp's for rsLoRA (alpha / sqrt(r)) and an alpha_pattern, which the converter ignores (it
     * writes lora_alpha alone, so llama.cpp would apply another scale).
     */
    private static float scaleFactor(LoraConfig lora, String module, int rank) {
        double llamaCppScale = (double) (float) lora.alpha() / rank;
        double peftScale = lora.scaleOf(module);
        return Math.abs(llamaCppScale - peftScale) <= 1e-6 * Math.abs(peftScale) ? 1f
                : (float) (peftScale / llamaCppScale);
    }

    private void addExperts(GgufWriter writer, SafetensorsReader weights, Map<String, GgmlType> types,
            Map<String, Pair> experts, ModelConfig config, int block, String w, List<String> problems) {
        List<Pair> stacked = new ArrayList<>();
        for (int e = 0; e < config.numLocalExperts(); e++) {
            Pair pair = experts.get("block_sparse_moe.experts." + e + "." + w);
            if (pair == null || !stacked.isEmpty() && (!Arrays.equals(pair.a().shape(),
                    stacked.get(0).a().shape()) || !Arrays.equals(pair.b().shape(),
                    stacked.get(0).b().shape()))) {
                problems.add("layer " + block + "'s " + w + " experts differ in rank or shape (torch.stack of the"
                        + " converter needs them equal)");
                return;
            }
            stacked.add(pair);
        }
        add(writer, weights, types, "blk." + block + "." + GgufExport.EXPERT_NAMES.get(w) + ".weight", stacked, 0);
    }

    /**
     * {@code ggufName}.lora_a and .lora_b, the pairs stacked along a first dimension when there are several (the
     * converter's torch.stack of LoraTorchTensors); B's rows permuted per head when {@code heads} is not 0.
     */
    private void add(GgufWriter writer, SafetensorsReader weights, Map<String, GgmlType> types, String ggufName,
            List<Pair> pairs, int heads) {
        for (int part = 0; part < 2; part++) {
            boolean isA = part == 0;
            long[] one = isA ? pairs.get(0).a().shape() : pairs.get(0).b().shape();
            long[] shape = pairs.size() == 1 ? one : new long[] {pairs.size(), one[0], one[1]};
            String tensorName = ggufName + (isA ? ".lora_a" : ".lora_b");
            GgmlType wanted = type.matrixType();
            GgmlType tensorType = shape[shape.length - 1] % wanted.blockSize() == 0 ? wanted : GgmlType.F16;
            writer.addTensor(tensorName, shape, tensorType, sink -> {
                for (Pair pair : pairs) {
                    TensorInfo info = isA ? pair.a() : pair.b();
                    float[] values = weights.readFloats(info.name());
                    if (!isA && pair.factor() != 1f) {
                        for (int i = 0; i < values.length; i++) {
                            values[i] *= pair.factor();
                        }
                    }
                    sink.accept(isA || heads == 0 ? values : GgufExport.permute(values, info.shape(), heads));
                }
            });
            types.put(tensorName, tensorType);
        }
    }
}
