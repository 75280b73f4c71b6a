package io.mixtune.model.checkpoint;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.mistral.DecoderLayer;
import io.mixtune.model.mistral.MistralAttention;
import io.mixtune.model.mistral.SparseMoeBlock;
import io.mixtune.model.mistral.SwiGluMlp;
import io.mixtune.model.nn.DenseLinear;
import io.mixtune.model.nn.Linear;
import io.mixtune.model.nn.RmsNorm;
import io.mixtune.model.safetensors.CheckpointException;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.TensorInfo;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Loads a Hugging Face Mistral or Mixtral checkpoint directory (config.json plus safetensors) into a {@link CausalLm}.
 *
 * <p>Every tensor the model needs is checked for presence and shape against config.json before anything is loaded,
 * so a wrong checkpoint fails with the full list of what is missing or misshapen rather than halfway through. Every
 * weight is read with {@link SafetensorsReader#readFiniteFloats}: a NaN or infinite weight stops the load naming its
 * file and tensor (before a dense or NF4 layer is made of it), where it would otherwise show up as NaN losses blamed on
 * the learning rate or as a generation of one repeated token.
 */
public final class MistralCheckpoint {
    private MistralCheckpoint() {}

    /** Makes each linear layer from its checkpoint weight [out, in]; QLoRA quantizes here, while streaming. */
    @FunctionalInterface
    public interface LinearFactory {
        Linear create(String moduleName, float[] weight, Shape shape, NDManager manager);
    }

    public static final LinearFactory DENSE = (name, weight, shape, manager) -> new DenseLinear(manager.create(weight, shape));

    public static CausalLm load(Path modelDir, NDManager parent) {
        return load(modelDir, parent, DENSE);
    }

    public static CausalLm load(Path modelDir, NDManager parent, LinearFactory linears) {
        return load(modelDir, parent, linears, DataType.FLOAT32);
    }

    /**
     * @param computeType FLOAT32, or FLOAT16 for half-precision compute (a GPU's): the dense linear layers (an untied
     *     lm_head and the router included) are held in it, and quantized layers dequantize into it; the embeddings and norms stay
     *     float32, read exactly from the checkpoint's bytes, as PEFT's prepare_model_for_kbit_training casts them, so
     *     that the residual stream is float32 ({@link DecoderLayer})
     */
    public static CausalLm load(Path modelDir, NDManager parent, LinearFactory linears, DataType computeType) {
        if (computeType != DataType.FLOAT32 && computeType != DataType.FLOAT16) {
            throw new IllegalArgumentException("compute type is float32 or float16, got " + computeType);
        }
        ModelConfig config = ModelConfig.read(modelDir.resolve("config.json"));
        try (SafetensorsReader reader = SafetensorsReader.open(modelDir)) {
            WeightLayout layout = WeightLayout.detect(config, reader::contains);
            checkTensors(modelDir, config, layout, reader);
            NDManager manager = parent.newSubManager();
            try {
                return build(config, layout, reader, manager, inComputeType(linears, computeType), computeType);
            } catch (RuntimeException e) {
                manager.close();
                throw e;
            }
        }
    }

    /**
     * Every linear layer of a model as config.json describes it, by its Hugging Face module name (the names adapters
     * use, experts one by one), with its weight's shape [out, in]; a tied lm_head is the embedding, not a layer.
     */
    public static Map<String, long[]> linearShapes(ModelConfig config) {
        Map<String, long[]> linears = new LinkedHashMap<>();
        WeightLayout.HUB.expectedShapes(config).forEach((name, shape) -> {
            if (shape.length == 2 && name.endsWith(".weight") && !name.equals("model.embed_tokens.weight")) {
                linears.put(name.substring(0, name.length() - ".weight".length()), shape);
            }
        });
        return linears;
    }

    /**
     * Every tensor a model as config.json describes it needs, by its name in the Hub's layout (a Mixtral's experts one
     * by one: block_sparse_moe.experts.{j}.w1/w2/w3), with its shape, in the order transformers lists them.
     */
    public static Map<String, long[]> hubTensorShapes(ModelConfig config) {
        return WeightLayout.HUB.expectedShapes(config);
    }

    private static void checkTensors(Path modelDir, ModelConfig config, WeightLayout layout, SafetensorsReader reader) {
        List<String> missing = new ArrayList<>();
        List<String> misshapen = new ArrayList<>();
        List<String> misstored = new ArrayList<>();
        for (Map.Entry<String, long[]> expected : layout.expectedShapes(config).entrySet()) {
            String name = expected.getKey();
            if (!reader.contains(name)) {
                missing.add(name);
                continue;
            }
            TensorInfo info = reader.info(name);
            if (!info.dtype().isFloat32Convertible()) {
                misstored.add(name + " in " + info.file().getFileName() + " is " + info.dtype());
            }
            if (!Arrays.equals(info.shape(), expected.getValue())) {
                misshapen.add(name + " in " + info.file().getFileName() + " has shape " + Arrays.toString(info.shape())
                        + " but config.json implies " + Arrays.toString(expected.getValue()));
            }
        }
        if (!missing.isEmpty()) {
            throw new CheckpointException(modelDir, missing.size() + " tensor(s) the " + config.modelType().hfName()
                    + " model needs are in no safetensors file: " + summarize(missing));
        }
        if (!misshapen.isEmpty()) {
            throw new CheckpointException(modelDir, "shapes disagree with config.json: " + summarize(misshapen));
        }
        if (!misstored.isEmpty()) {
            throw new CheckpointException(modelDir, "mixtune reads weights stored as F32, F16 or BF16 (and quantizes"
                    + " them itself), but " + summarize(misstored) + ": use the full-precision checkpoint");
        }
    }

    private static String summarize(List<String> items) {
        int shown = Math.min(items.size(), 20);
        String list = String.join(", ", items.subList(0, shown));
        return items.size() > shown ? list + ", ... and " + (items.size() - shown) + " more" : list;
    }

    /** The factory's dense layers converted to the compute type; other layers (NF4) convert at each forward. */
    private static LinearFactory inComputeType(LinearFactory linears, DataType computeType) {
        if (computeType == DataType.FLOAT32) {
            return linears;
        }
        return (name, weight, shape, manager) -> {
            Linear linear = linears.create(name, weight, shape, manager);
            if (linear instanceof DenseLinear dense && dense.weight().getDataType() != computeType) {
                try (NDArray full = dense.weight()) {
                    return new DenseLinear(full.toType(computeType, false));
                }
            }
            return linear;
        };
    }

    private static CausalLm build(ModelConfig config, WeightLayout layout, SafetensorsReader reader, NDManager manager,
            LinearFactory linears, DataType computeType) {
        NDArray embedTokens = tensor(reader, "model.embed_tokens.weight", manager);
        List<DecoderLayer> layers = new ArrayList<>();
        for (int i = 0; i < config.numHiddenLayers(); i++) {
            String prefix = "model.layers." + i;
            MistralAttention attention = new MistralAttention(config,
                    linear(reader, prefix + ".self_attn.q_proj", manager, linears),
                    linear(reader, prefix + ".self_attn.k_proj", manager, linears),
                    linear(reader, prefix + ".self_attn.v_proj", manager, linears),
                    linear(reader, prefix + ".self_attn.o_proj", manager, linears));
            SwiGluMlp mlp = null;
            SparseMoeBlock moe = null;
            if (config.isMixtureOfExperts()) {
                moe = sparseMoe(config, layout, reader, prefix, manager, linears);
            } else {
                mlp = SwiGluMlp.mistral(
                        linear(reader, prefix + ".mlp.gate_proj", manager, linears),
                        linear(reader, prefix + ".mlp.up_proj", manager, linears),
                        linear(reader, prefix + ".mlp.down_proj", manager, linears));
            }
            layers.add(new DecoderLayer(computeType, norm(reader, prefix + ".input_layernorm", manager, config),
                    attention, norm(reader, prefix + ".post_attention_layernorm", manager, config), mlp, moe));
        }
        RmsNorm norm = norm(reader, "model.norm", manager, config);
        Linear lmHead = config.tieWordEmbeddings() ? null : linear(reader, "lm_head", manager, linears);
        return new CausalLm(config, computeType, manager, embedTokens, layers, norm, lmHead);
    }

    /** Experts are named in mixtune by the Hub's per-expert layout whatever the file holds, as PEFT adapters are. */
    private static SparseMoeBlock sparseMoe(ModelConfig config, WeightLayout layout, SafetensorsReader reader,
            String prefix, NDManager manager, LinearFactory linears) {
        String modulePrefix = prefix + ".block_sparse_moe";
        List<SwiGluMlp> experts = new ArrayList<>();
        if (layout == WeightLayout.MIXTRAL_FUSED) {
            int e = config.numLocalExperts();
            int inter = config.intermediateSize();
            int hidden = config.hiddenSize();
            String gateUp = prefix + ".mlp.experts.gate_up_proj";
            String down = prefix + ".mlp.experts.down_proj";
            int expertMatrix = Math.toIntExact((long) inter * hidden);
            // One expert's slices at a time: the fused tensors of a real Mixtral are gigabytes each.
            for (int j = 0; j < e; j++) {
                String expertName = modulePrefix + ".experts." + j;
                long gateUpStart = 2L * j * expertMatrix;
                float[] w1 = reader.readFiniteFloats(gateUp, gateUpStart, expertMatrix);
                float[] w3 = reader.readFiniteFloats(gateUp, gateUpStart + expertMatrix, expertMatrix);
                float[] w2 = reader.readFiniteFloats(down, (long) j * expertMatrix, expertMatrix);
                experts.add(SwiGluMlp.mixtralExpert(
                        linears.create(expertName + ".w1", w1, new Shape(inter, hidden), manager),
                        linears.create(expertName + ".w3", w3, new Shape(inter, hidden), manager),
                        linears.create(expertName + ".w2", w2, new Shape(hidden, inter), manager)));
            }
            Linear router = linears.create(modulePrefix + ".gate", reader.readFiniteFloats(prefix + ".mlp.gate.weight"),
                    new Shape(e, hidden), manager);
            return new SparseMoeBlock(router, experts, config.numExpertsPerTok());
        }
        for (int j = 0; j < config.numLocalExperts(); j++) {
            String expertName = modulePrefix + ".experts." + j;
            experts.add(SwiGluMlp.mixtralExpert(
                    linear(reader, expertName + ".w1", manager, linears),
                    linear(reader, expertName + ".w3", manager, linears),
                    linear(reader, expertName + ".w2", manager, linears)));
        }
        return new SparseMoeBlock(linear(reader, modulePrefix + ".gate", manager, linears), experts,
                config.numExpertsPerTok());
    }

    private static Linear linear(SafetensorsReader reader, String moduleName, NDManager manager, LinearFactory linears) {
        String name = moduleName + ".weight";
        return linears.create(moduleName, reader.readFiniteFloats(name), new Shape(reader.info(name).shape()), manager);
    }

    private static RmsNorm norm(SafetensorsReader reader, String moduleName, NDManager manager, ModelConfig config) {
        return new RmsNorm(tensor(reader, moduleName + ".weight", manager), config.rmsNormEps());
    }

    /** A float32 tensor: F32, F16 and BF16 all convert to it exactly. */
    private static NDArray tensor(SafetensorsReader reader, String name, NDManager manager) {
        return manager.create(reader.readFiniteFloats(name), new Shape(reader.info(name).shape()));
    }

    /** Tensor names and shapes a model needs, by the layout its file uses. */
    enum WeightLayout {
        /** Mistral, or Mixtral as on the Hub: block_sparse_moe.gate and experts.{j}.w1/w2/w3. */
        HUB,
        /** Mixtral as transformers 5 can write it: mlp.gate and fused mlp.experts.gate_up_proj / down_proj. */
        MIXTRAL_FUSED;

        static WeightLayout detect(ModelConfig config, java.util.function.Predicate<String> contains) {
            boolean fused = config.isMixtureOfExperts() && contains.test("model.layers.0.mlp.experts.gate_up_proj");
            return fused ? MIXTRAL_FUSED : HUB;
        }

        Map<String, long[]> expectedShapes(ModelConfig c) {
            Map<String, long[]> shapes = new LinkedHashMap<>();
            long h = c.hiddenSize();
            long inter = c.intermediateSize();
            long qOut = (long) c.numAttentionHeads() * c.headDim();
            long kvOut = (long) c.numKeyValueHeads() * c.headDim();
            shapes.put("model.embed_tokens.weight", new long[] {c.vocabSize(), h});
            for (int i = 0; i < c.numHiddenLayers(); i++) {
                String p = "model.layers." + i;
                shapes.put(p + ".input_layernorm.weight", new long[] {h});
                shapes.put(p + ".post_attention_layernorm.weight", new long[] {h});
                shapes.put(p + ".self_attn.q_proj.weight", new long[] {qOut, h});
                shapes.put(p + ".self_attn.k_proj.weight", new long[] {kvOut, h});
                shapes.put(p + ".self_attn.v_proj.weight", new long[] {kvOut, h});
                shapes.put(p + ".self_attn.o_proj.weight", new long[] {h, qOut});
                if (!c.isMixtureOfExperts()) {
                    shapes.put(p + ".mlp.gate_proj.weight", new long[] {inter, h});
                    shapes.put(p + ".mlp.up_proj.weight", new long[] {inter, h});
                    shapes.put(p + ".mlp.down_proj.weight", new long[] {h, inter});
                } else if (this == MIXTRAL_FUSED) {
                    long e = c.numLocalExperts();
                    shapes.put(p + ".mlp.gate.weight", new long[] {e, h});
                    shapes.put(p + ".mlp.experts.gate_up_proj", new long[] {e, 2 * inter, h});
                    shapes.put(p + ".mlp.experts.down_proj", new long[] {e, h, inter});
                } else {
                    shapes.put(p + ".block_sparse_moe.gate.weight", new long[] {c.numLocalExperts(), h});
                    for (int j = 0; j < c.numLocalExperts(); j++) {
                        String x = p + ".block_sparse_moe.experts." + j;
                        shapes.put(x + ".w1.weight", new long[] {inter, h});
                        shapes.put(x + ".w3.weight", new long[] {inter, h});
                        shapes.put(x + ".w2.weight", new long[] {h, inter});
                    }
                }
            }
            shapes.put("model.norm.weight", new long[] {h});
            if (!c.tieWordEmbeddings()) {
                shapes.put("lm_head.weight", new long[] {c.vocabSize(), h});
            }
            return shapes;
        }
    }
}
