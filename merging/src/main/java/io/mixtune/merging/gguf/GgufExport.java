package io.mixtune.merging.gguf;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.lora.adapter.AdapterMerge;
import io.mixtune.model.checkpoint.PathOverlap;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A Mistral or Mixtral checkpoint, with a LoRA adapter folded in ({@link AdapterMerge.Merged}, what merge-adapter
 * writes), as one GGUF file for llama.cpp and Ollama: what llama.cpp's convert_hf_to_gguf.py writes for the merged
 * checkpoint (LlamaModel, architecture "llama"): its metadata, tokenizer, tensor names and types, and the Q/K rows
 * permuted as llama.cpp's rotary embedding reads them. The file is written in a staging directory beside {@code out}
 * and renamed when complete; an existing {@code out} is replaced only with {@link #force}, and an {@code out} inside
 * an input never.
 */
public final class GgufExport {
    /** A layer's weight; transformers 5's fused expert tensors are parameters of mlp.experts, named without .weight. */
    static final Pattern LAYER = Pattern.compile(
            "model\\.layers\\.(\\d+)\\.(?:(.+)\\.weight|(mlp\\.experts\\.(?:gate_up_proj|down_proj)))");
    static final Pattern EXPERT = Pattern.compile("block_sparse_moe\\.experts\\.(\\d+)\\.(w1|w2|w3)");
    /** convert_hf_to_gguf's names for llama (gguf-py's tensor_mapping.py), per layer. */
    static final Map<String, String> LAYER_NAMES = Map.ofEntries(
            Map.entry("input_layernorm", "attn_norm"),
            Map.entry("self_attn.q_proj", "attn_q"),
            Map.entry("self_attn.k_proj", "attn_k"),
            Map.entry("self_attn.v_proj", "attn_v"),
            Map.entry("self_attn.o_proj", "attn_output"),
            Map.entry("post_attention_layernorm", "ffn_norm"),
            Map.entry("mlp.gate_proj", "ffn_gate"),
            Map.entry("mlp.up_proj", "ffn_up"),
            Map.entry("mlp.down_proj", "ffn_down"),
            Map.entry("block_sparse_moe.gate", "ffn_gate_inp"),
            Map.entry("mlp.gate", "ffn_gate_inp"));
    /** Mixtral's expert weights stacked per layer: w1 gate, w2 down, w3 up. */
    static final Map<String, String> EXPERT_NAMES = Map.of("w1", "ffn_gate_exps", "w2", "ffn_down_exps",
            "w3", "ffn_up_exps");

    private final Path model;
    private final Path out;
    private Path adapter;
    private GgufFileType type = GgufFileType.F16;
    private boolean force;
    private String name;
    private int threads = GgufEncoder.defaultThreads();
    private LlamaQuantizeTypes.Options quantizeOptions = LlamaQuantizeTypes.Options.NONE;
    private ImportanceMatrix imatrix;
    private String imatrixArgument;
    private List<LlamaQuantizeTypes.TensorType> tensorTypes = List.of();

    private GgufExport(Path model, Path out) {
        this.model = Objects.requireNonNull(model, "model");
        this.out = Objects.requireNonNull(out, "out");
    }

    /**
     * @param model the base model directory (Hugging Face layout)
     * @param out the .gguf file to write
     */
    public static GgufExport of(Path model, Path out) {
        return new GgufExport(model, out);
    }

    /** The LoRA adapter (PEFT format) folded in first; none by default. */
    public GgufExport adapter(Path value) {
        this.adapter = value;
        return this;
    }

    /** The type of the matrices; default f16 (the converter's default for an f32 or f16 checkpoint). */
    public GgufExport type(GgufFileType value) {
        this.type = Objects.requireNonNull(value, "type");
        return this;
    }

    /**
     * The threads that encode the tensors; default the available processors (llama-quantize's nthread default). The
     * file is the same for any number.
     */
    public GgufExport threads(int count) {
        if (count < 1) {
            throw new IllegalArgumentException("--threads " + count + " is under 1; expected a positive count");
        }
        this.threads = count;
        return this;
    }

    /**
     * llama-quantize's {@code --pure}: every quantizable tensor the file type's default type (no per-tensor rule, no
     * fallback). A llama-quantize type only.
     */
    public GgufExport pure(boolean value) {
        quantizeOptions = new LlamaQuantizeTypes.Options(value, quantizeOptions.outputTensorType(),
                quantizeOptions.tokenEmbeddingType(), quantizeOptions.leaveOutputTensor());
        return this;
    }

    /** llama-quantize's {@code --output-tensor-type}: output.weight's type (null: the file type's rule). */
    public GgufExport outputTensorType(GgmlType value) {
        quantizeOptions = new LlamaQuantizeTypes.Options(quantizeOptions.pure(), value,
                quantizeOptions.tokenEmbeddingType(), quantizeOptions.leaveOutputTensor());
        return this;
    }

    /** llama-quantize's {@code --token-embedding-type}: token_embd.weight's type (null: the file type's rule). */
    public GgufExport tokenEmbeddingType(GgmlType value) {
        quantizeOptions = new LlamaQuantizeTypes.Options(quantizeOptions.pure(), quantizeOptions.outputTensorType(),
                value, quantizeOptions.leaveOutputTensor());
        return this;
    }

    /** llama-quantize's {@code --leave-output-tensor}: output.weight kept as the f32 file has it. */
    public GgufExport leaveOutputTensor(boolean value) {
        quantizeOptions = new LlamaQuantizeTypes.Options(quantizeOptions.pure(), quantizeOptions.outputTensorType(),
                quantizeOptions.tokenEmbeddingType(), value);
        return this;
    }

    /**
     * llama-quantize's {@code --imatrix FILE} ({@link ImportanceMatrix}): the quantizers weighted by it
     * ({@link GgmlWeightedQuants}), its rules, and quantize.imatrix.* in the file.
     *
     * @param argument the path as given on the command line, which llama-quantize writes as quantize.imatrix.file
     */
    public GgufExport importanceMatrix(String argument) {
        this.imatrixArgument = argument;
        this.imatrix = argument == null ? null : ImportanceMatrix.read(Path.of(argument));
        return this;
    }

    /**
     * llama-quantize's {@code --tensor-type NAME=TYPE} and {@code --tensor-type-file} entries, in command-line order:
     * a tensor whose name NAME (a regular expression, lower-cased) is found in takes TYPE ({@link
     * LlamaQuantizeTypes.TensorType}).
     */
    public GgufExport tensorTypes(List<String> assignments) {
        this.tensorTypes = assignments.stream().map(LlamaQuantizeTypes.TensorType::parse).toList();
        return this;
    }

    /** Replace an existing {@code out}. */
    public GgufExport force(boolean replace) {
        this.force = replace;
        return this;
    }

    /** general.name; default: the model folder's name as the converter titles it ("tiny-mistral": "Tiny Mistral"). */
    public GgufExport name(String value) {
        this.name = value;
        return this;
    }

    /**
     * @param tensors each tensor's GGUF name and type, in file order
     * @param bytes the file's size
     */
    public record Result(Path model, Path adapter, Path out, GgufFileType type, Map<String, GgmlType> tensors,
            long bytes) {}

    /**
     * @throws IllegalArgumentException for what the user must fix: an out that is, holds or lies inside an input, an
     *     existing out without force, a model or adapter that does not fit; nothing is written then
     */
    public Result run() {
        List<Path> inputs = adapter == null ? List.of(model) : List.of(model, adapter);
        for (Path input : inputs) {
            String problem = PathOverlap.problem("--out", out, input);
            if (problem != null) {
                throw new IllegalArgumentException(problem);
            }
        }
        if (Files.isDirectory(out)) {
            throw new IllegalArgumentException("--out " + out + " is a directory; expected the .gguf file to write");
        }
        if (!type.quantizeMix() && (imatrix != null || !tensorTypes.isEmpty())) {
            throw new IllegalArgumentException("--imatrix and --tensor-type are llama-quantize's options, for its types"
                    + " (q4_1, q5_0, q5_1, q4_k_m ..., q2_k_s, iq4_nl, iq4_xs); --type " + type.cliName() + " is"
                    + " convert_hf_to_gguf.py's, which has neither (export --type f32 and run llama-quantize on it for"
                    + " its " + type.cliName() + " with an imatrix)");
        }
        if (!type.quantizeMix() && !quantizeOptions.equals(LlamaQuantizeTypes.Options.NONE)) {
            throw new IllegalArgumentException("--pure, --output-tensor-type, --token-embedding-type and"
                    + " --leave-output-tensor are llama-quantize's options, for its types (q4_1, q5_0, q5_1, q4_k_m"
                    + " ...); --type " + type.cliName() + " is convert_hf_to_gguf.py's, which has none of them");
        }
        // NOFOLLOW_LINKS: a link whose target is missing is still the user's file, and the rename would replace it
        if (Files.exists(out, LinkOption.NOFOLLOW_LINKS) && !force) {
            throw new IllegalArgumentException("--out " + out + " exists; choose another --out, or pass --force to"
                    + " replace it");
        }
        ModelConfig config = ModelConfig.read(model.resolve("config.json"));
        Map<String, Path> tokenizerFiles = AdapterMerge.tokenizerSources(
                adapter == null ? List.of(model) : List.of(adapter, model));
        try (AdapterMerge.Merged merged = AdapterMerge.Merged.open(model, adapter)) {
            GgufWriter writer = new GgufWriter();
            writer.threads(threads);
            Map<String, GgmlType> types = planTensors(writer, merged, config);
            putMetadata(writer, config, tokenizerFiles);
            if (type.quantizeMix()) {
                types = quantizeMix(writer, types, config);
            }
            StagedGgufFile.write(writer, out);
            return new Result(model, adapter, out, type, types, Files.size(out));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + out + ": " + e.getMessage(), e);
        }
    }

    /**
     * What llama-quantize (src/llama-quant.cpp, llama_model_quantize_impl, no imatrix) makes of the f32 export: the
     * same keys, general.quantization_version and general.file_type set last (gguf_set_val_u32 removes a key and
     * appends it), the tensors in the loader's order, each of the type {@link LlamaQuantizeTypes} picks (with the
     * options given: --pure ...).
     */
    private Map<String, GgmlType> quantizeMix(GgufWriter writer, Map<String, GgmlType> f32Types, ModelConfig config) {
        writer.moveToEnd("general.quantization_version");
        writer.moveToEnd("general.file_type");
        // an imatrix file without entries leaves llama-quantize's params.imatrix unset: as if none was given
        ImportanceMatrix importance = imatrix != null && !imatrix.weights().isEmpty() ? imatrix : null;
        if (importance != null) {
            ImportanceMatrixUse.putMetadata(writer, imatrixArgument, importance);
        }
        writer.refuseInvalidData();
        Map<String, long[]> shapes = new TreeMap<>(LlamaQuantizeTypes.ORDER);
        shapes.putAll(writer.shapes());
        Map<String, GgmlType> types = LlamaQuantizeTypes.of(type, new java.util.LinkedHashMap<>(shapes), f32Types,
                config.numHiddenLayers(), config.isMixtureOfExperts() ? config.numLocalExperts() : 0,
                config.numAttentionHeads(), config.numKeyValueHeads(),
                quantizeOptions.with(importance != null, tensorTypes));
        ImportanceMatrixUse.assign(writer, type, shapes, f32Types, types, importance, imatrixArgument);
        writer.reorderAndRetype(LlamaQuantizeTypes.ORDER, types);
        return types;
    }

    /** LlamaModel's metadata in the converter's order (ModelBase.prepare_metadata, TextModel.set_gguf_parameters). */
    private void putMetadata(GgufWriter writer, ModelConfig config, Map<String, Path> tokenizerFiles) {
        writer.putString("general.architecture", "llama");
        writer.putString("general.type", "model");
        String folder = model.toAbsolutePath().normalize().getFileName().toString();
        writer.putString("general.name", name != null ? name : title(folder));
        writer.putString("general.size_label", sizeLabel(writer.shapes()));
        writer.putUint32("llama.block_count", config.numHiddenLayers());
        writer.putUint32("llama.context_length", config.maxPositionEmbeddings());
        writer.putUint32("llama.embedding_length", config.hiddenSize());
        writer.putUint32("llama.feed_forward_length", config.intermediateSize());
        writer.putUint32("llama.attention.head_count", config.numAttentionHeads());
        writer.putUint32("llama.attention.head_count_kv", config.numKeyValueHeads());
        writer.putFloat32("llama.rope.freq_base", (float) config.ropeTheta());
        writer.putFloat32("llama.attention.layer_norm_rms_epsilon", (float) config.rmsNormEps());
        if (config.isMixtureOfExperts()) {
            writer.putUint32("llama.expert_count", config.numLocalExperts());
            writer.putUint32("llama.expert_used_count", config.numExpertsPerTok());
        }
        if (converterHasHeadDim(config)) {
            writer.putUint32("llama.attention.key_length", config.headDim());
            writer.putUint32("llama.attention.value_length", config.headDim());
        }
        writer.putUint32("general.file_type", type.id());
        writer.putUint32("llama.vocab_size", config.vocabSize());
        writer.putUint32("llama.rope.dimension_count", config.headDim());
        writer.putUint32("general.quantization_version", 2); // GGML_QUANT_VERSION
        GgufVocabulary.put(writer, tokenizerFiles, model.resolve("config.json"), config.vocabSize());
    }

    /**
     * Whether the converter's hparams (transformers' AutoConfig.to_dict) hold a head_dim, for which
     * TextModel.set_gguf_parameters writes the attention key/value length: MistralConfig fills in hidden / heads where
     * config.json has none, MixtralConfig leaves it None (the Hub's Mixtral-8x7B config.json has none).
     */
    private boolean converterHasHeadDim(ModelConfig config) {
        if (config.modelType() != ModelConfig.ModelType.MIXTRAL) {
            return true;
        }
        try {
            return new ObjectMapper().readTree(model.resolve("config.json").toFile())
                    .path("head_dim").isNumber();
        } catch (IOException e) {
            throw new UncheckedIOException(model.resolve("config.json") + ": " + e.getMessage(), e);
        }
    }

    /**
     * Every tensor under its llama.cpp name, in the converter's order (the checkpoint's names sorted, a layer's
     * experts stacked where its last one comes), and the type prepare_tensors gives it: F32 for 1-D tensors, norms
     * and the router, the file type for the rest (F16 where a row is not whole blocks of it, as the converter falls
     * back).
     */
    private Map<String, GgmlType> planTensors(GgufWriter writer, AdapterMerge.Merged merged, ModelConfig config) {
        SafetensorsReader base = merged.base();
        Map<String, GgmlType> types = new java.util.LinkedHashMap<>();
        Map<Integer, TreeMap<String, String>> expertsByLayer = new TreeMap<>();
        List<String> problems = new ArrayList<>();
        for (String hfName : new TreeSet<>(base.names())) {
            if (!base.info(hfName).dtype().isFloat32Convertible()) {
                problems.add(hfName + " is " + base.info(hfName).dtype() + " (export-gguf reads F32, F16 and BF16)");
                continue;
            }
            long[] shape = base.info(hfName).shape();
            String ggufName;
            WeightRead source = () -> merged.read(hfName);
            if (hfName.equals("model.embed_tokens.weight")) {
                ggufName = "token_embd.weight";
            } else if (hfName.equals("model.norm.weight")) {
                ggufName = "output_norm.weight";
            } else if (hfName.equals("lm_head.weight")) {
                ggufName = "output.weight";
            } else {
                Matcher layer = LAYER.matcher(hfName);
                if (!layer.matches()) {
                    problems.add(hfName + " has no llama.cpp name");
                    continue;
                }
                int block = Integer.parseInt(layer.group(1));
                String module = layer.group(2) != null ? layer.group(2) : layer.group(3);
                Matcher expert = EXPERT.matcher(module);
                if (expert.matches()) {
                    // stacked when the layer's last expert weight has been seen, as LlamaModel.modify_tensors does
                    expertsByLayer.computeIfAbsent(block, b -> new TreeMap<>()).put(module, hfName);
                    if (expertsByLayer.get(block).size() == 3 * config.numLocalExperts()) {
                        for (String w : List.of("w1", "w2", "w3")) {
                            addExperts(writer, types, merged, config, block, w);
                        }
                        expertsByLayer.remove(block);
                    }
                    continue;
                }
                if (module.equals("mlp.experts.gate_up_proj") || module.equals("mlp.experts.down_proj")) {
                    addFusedExperts(writer, types, merged, block, hfName, module);
                    continue;
                }
                String mapped = LAYER_NAMES.get(module);
                if (mapped == null) {
                    problems.add(hfName + " has no llama.cpp name");
                    continue;
                }
                ggufName = "blk." + block + "." + mapped + ".weight";
                if (module.equals("self_attn.q_proj")) {
                    source = () -> permute(merged.read(hfName), shape, config.numAttentionHeads());
                } else if (module.equals("self_attn.k_proj")) {
                    source = () -> permute(merged.read(hfName), shape, config.numKeyValueHeads());
                }
            }
            GgmlType tensorType = typeOf(ggufName, shape);
            WeightRead read = source;
            writer.addTensor(ggufName, shape, tensorType, sink -> sink.accept(read.read()));
            types.put(ggufName, tensorType);
        }
        expertsByLayer.forEach((block, experts) -> problems.add("layer " + block + " has " + experts.size()
                + " expert weights where num_local_experts " + config.numLocalExperts() + " needs "
                + 3 * config.numLocalExperts() + " (the converter's \"Unprocessed experts\")"));
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException(model + ": " + String.join("; ", problems));
        }
        return types;
    }

    @FunctionalInterface
    private interface WeightRead {
        float[] read();
    }

    private void addExperts(GgufWriter writer, Map<String, GgmlType> types, AdapterMerge.Merged merged,
            ModelConfig config, int block, String w) {
        long[] one = null;
        for (int e = 0; e < config.numLocalExperts(); e++) {
            String name = "model.layers." + block + ".block_sparse_moe.experts." + e + "." + w + ".weight";
            if (!merged.base().contains(name) || one != null && !Arrays.equals(one, merged.base().info(name).shape())) {
                throw new IllegalArgumentException(model + ": " + name + " is missing or shaped unlike expert 0's");
            }
            one = merged.base().info(name).shape();
        }
        long[] shape = {config.numLocalExperts(), one[0], one[1]};
        String ggufName = "blk." + block + "." + EXPERT_NAMES.get(w) + ".weight";
        GgmlType tensorType = typeOf(ggufName, shape);
        writer.addTensor(ggufName, shape, tensorType, sink -> {
            for (int e = 0; e < config.numLocalExperts(); e++) {
                sink.accept(merged.read("model.layers." + block + ".block_sparse_moe.experts." + e + "." + w
                        + ".weight"));
            }
        });
        types.put(ggufName, tensorType);
    }

    /** transformers 5's fused layout: gate_up_proj [E, 2I, H] (each expert's gate rows first), down_proj [E, H, I]. */
    private void addFusedExperts(GgufWriter writer, Map<String, GgmlType> types, AdapterMerge.Merged merged, int block,
            String hfName, String module) {
        long[] shape = merged.base().info(hfName).shape();
        if (module.endsWith("down_proj")) {
            String ggufName = "blk." + block + ".ffn_down_exps.weight";
            GgmlType tensorType = typeOf(ggufName, shape);
            writer.addTensor(ggufName, shape, tensorType, sink -> sink.accept(merged.read(hfName)));
            types.put(ggufName, tensorType);
            return;
        }
        long[] half = {shape[0], shape[1] / 2, shape[2]};
        for (String part : List.of("ffn_gate_exps", "ffn_up_exps")) {
            String ggufName = "blk." + block + "." + part + ".weight";
            int offset = part.equals("ffn_gate_exps") ? 0 : 1;
            GgmlType tensorType = typeOf(ggufName, half);
            writer.addTensor(ggufName, half, tensorType, sink -> {
                float[] fused = merged.read(hfName);
                int expertSize = Math.toIntExact(half[1] * half[2]);
                for (int e = 0; e < half[0]; e++) {
                    sink.accept(Arrays.copyOfRange(fused, (2 * e + offset) * expertSize,
                            (2 * e + offset + 1) * expertSize));
                }
            });
            types.put(ggufName, tensorType);
        }
    }

    /**
     * The converter's choice: F32 for 1-D tensors, norms and the router, else the file type (F16 for odd rows); F32
     * for a k-quant mix, whose input is the f32 export.
     */
    private GgmlType typeOf(String ggufName, long[] shape) {
        if (shape.length <= 1 || ggufName.endsWith("_norm.weight") || ggufName.contains(".ffn_gate_inp.")) {
            return GgmlType.F32;
        }
        GgmlType wanted = type.quantizeMix() ? GgmlType.F32 : type.matrixType();
        return shape[shape.length - 1] % wanted.blockSize() == 0 ? wanted : GgmlType.F16;
    }

    /**
     * LlamaModel.permute: each head's rows [first half; second half] (transformers' rotate_half pairs row i with row
     * i + d/2) interleaved to [r0, r(d/2), r1, r(d/2+1), ...], the adjacent pairs llama.cpp's rope rotates.
     */
    static float[] permute(float[] weight, long[] shape, int heads) {
        int rows = Math.toIntExact(shape[0]);
        int columns = Math.toIntExact(shape[1]);
        int headDim = rows / heads;
        int half = headDim / 2;
        float[] permuted = new float[weight.length];
        for (int h = 0; h < heads; h++) {
            for (int i = 0; i < half; i++) {
                for (int j = 0; j < 2; j++) {
                    System.arraycopy(weight, (h * headDim + j * half + i) * columns, permuted,
                            (h * headDim + i * 2 + j) * columns, columns);
                }
            }
        }
        return permuted;
    }

    /**
     * gguf.size_label on gguf_writer.get_total_parameter_count: "4.2M" for a dense model, "{experts}x{size}" with the
     * shared parameters plus one expert's for a MoE (tensors named *_exps.* of 3 dimensions are expert tensors).
     */
    static String sizeLabel(Map<String, long[]> shapes) {
        long total = 0;
        long shared = 0;
        long expertParams = 0;
        long expertSum = 0;
        long expertTensors = 0;
        for (Map.Entry<String, long[]> tensor : shapes.entrySet()) {
            long[] shape = tensor.getValue();
            long size = Arrays.stream(shape).reduce(1, Math::multiplyExact);
            if (tensor.getKey().contains("_exps.") && shape.length >= 3) {
                long experts = shape[shape.length - 3];
                expertParams += size / experts;
                expertSum += experts;
                expertTensors++;
            } else {
                shared += size;
            }
            total += size;
        }
        long expertCount = expertTensors > 0 ? expertSum / expertTensors : 0;
        return expertCount > 0 ? expertCount + "x" + roundedCount(shared + expertParams) : roundedCount(total);
    }

    /** gguf.utility.model_weight_count_rounded_notation(count, min_digits=2). */
    static String roundedCount(long count) {
        double scaled;
        String suffix;
        if (count > 1e12) {
            scaled = count * 1e-12;
            suffix = "T";
        } else if (count > 1e9) {
            scaled = count * 1e-9;
            suffix = "B";
        } else if (count > 1e6) {
            scaled = count * 1e-6;
            suffix = "M";
        } else {
            scaled = count * 1e-3;
            suffix = "K";
        }
        String rounded = Long.toString((long) Math.rint(scaled)).replaceFirst("^0+", "");
        int decimals = Math.max(2 - rounded.length(), 0);
        return new BigDecimal(scaled).setScale(decimals, RoundingMode.HALF_EVEN).toPlainString() + suffix;
    }

    /** gguf.Metadata.id_to_title: '-' as spaces, each all-lowercase word title-cased unless a version or number. */
    static String title(String id) {
        List<String> words = new ArrayList<>();
        for (String word : id.strip().replace('-', ' ').split("\\s+")) {
            if (word.isEmpty()) {
                continue;
            }
            boolean lower = word.chars().anyMatch(Character::isLetter)
                    && word.chars().filter(Character::isLetter).allMatch(Character::isLowerCase);
            boolean versionOrNumber = word.matches("v\\d+(\\.\\d+)*|\\d.*");
            words.add(lower && !versionOrNumber ? titleCase(word) : word);
        }
        return String.join(" ", words);
    }

    /** Python's str.title(): a letter after a non-letter upper-cased, the others lower-cased. */
    private static String titleCase(String word) {
        StringBuilder titled = new StringBuilder(word.length());
        boolean previousLetter = false;
        for (char c : word.toCharArray()) {
            titled.append(previousLetter ? Character.toLowerCase(c) : Character.toUpperCase(c));
            previousLetter = Character.isLetter(c);
        }
        return titled.toString();
    }
}
