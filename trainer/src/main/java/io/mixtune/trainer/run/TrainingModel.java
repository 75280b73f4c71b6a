package io.mixtune.trainer.run;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import io.mixtune.lora.adapter.LoraInit;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.lora.init.MutatedInit;
import io.mixtune.lora.nf4.Nf4Loading;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.trainer.PresetCheckpoint;
import io.mixtune.trainer.device.ComputeDevice;
import io.mixtune.trainer.device.NoGpuException;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeValueException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * The model a recipe trains: the base (a checkpoint, or a tiny preset written once with random weights; NF4 for
 * QLoRA) in the recipe's compute type, with the trainable adapter attached under {@code adapterName}, fresh (PEFT's
 * init, seeded) or the one model.adapter names. Closing it frees the weights.
 */
public record TrainingModel(NDManager manager, CausalLm model, LoraModel lora, Path baseModelDir,
        DataType computeType) implements AutoCloseable {
    /** The trained adapter's name (PEFT's default), in the model and in every adapter mixtune writes. */
    public static final String ADAPTER_NAME = "default";

    /**
     * Refuses, before anything is read or written, a model this install cannot train: a shape-only preset, or
     * device: gpu without a usable GPU ({@link NoGpuException}, with the set-up steps). Returns the device.
     */
    public static Device check(Recipe recipe) {
        if (recipe.model().preset() != null && ModelPreset.load(recipe.model().preset()).parameterCount()
                > PresetCheckpoint.MAX_MATERIALISED_PARAMETERS) {
            throw new RecipeValueException("model.preset", recipe.model().preset() + " holds the model's shapes "
                    + "(for memory plans), not weights: train on the checkpoint with --set model.path=DIR");
        }
        try {
            return ComputeDevice.choose(recipe.model().device());
        } catch (NoGpuException e) {
            throw new NoGpuException("model." + e.getMessage());
        }
    }

    /** @param notes receives what a person should know of the loading (such as float16 on a CPU) */
    public static TrainingModel load(Recipe recipe, Consumer<String> notes) {
        return load(recipe, notes, config -> Map.of());
    }

    /**
     * @param modulesToSave what model.adapter holds besides LoRA, by the model's config (a reward model's score head),
     *     loaded into the trained adapter with it
     */
    public static TrainingModel load(Recipe recipe, Consumer<String> notes,
            Function<ModelConfig, Map<String, long[]>> modulesToSave) {
        String adapterName = ADAPTER_NAME;
        Device device = check(recipe);
        Path baseModelDir = TrainingData.baseModelDir(recipe);
        if (recipe.model().path() == null) {
            CachedPreset.ensure(recipe.model().preset(), baseModelDir);
        }
        NDManager manager = NDManager.newBaseManager(device);
        MistralCheckpoint.LinearFactory linears = linears(recipe.model());
        LoraInit init = recipe.model().adapter() == null ? recipe.lora().initLoraWeights() : LoraInit.PEFT_DEFAULT;
        Map<String, float[][]> initial = new LinkedHashMap<>();
        if (init.readsBase()) {
            // Recomputed from the checkpoint at every load (deterministic: a --resume gets the same residual bits)
            linears = MutatedInit.factory(linears, recipe.lora().toConfig(), init, recipe.train().seed(), initial);
        }
        DataType computeType = computeType(recipe.model(), device);
        if (computeType == DataType.FLOAT16 && !device.isGpu()) {
            notes.accept("compute_dtype fp16 on CPU: float16 matmuls run at about 1 GFLOP/s on a CPU (float32: tens); "
                    + "fp16 is meant for a GPU");
        }
        CausalLm model = MistralCheckpoint.load(baseModelDir, manager, linears, computeType);
        LoraModel lora = new LoraModel(model);
        if (recipe.model().adapter() != null) {
            PeftAdapter.load(lora, Path.of(recipe.model().adapter()), adapterName, modulesToSave.apply(model.config()));
        } else if (init.mutatesBase()) {
            lora.addMutatedAdapter(adapterName, recipe.lora().toConfig(), initial);
        } else if (init.loftq()) {
            lora.putAdapter(adapterName, recipe.lora().toConfig(), initial); // a plain adapter on the NF4 base
        } else {
            lora.addAdapter(adapterName, recipe.lora().toConfig(), LoraModel.Init.of(init), recipe.train().seed());
        }
        return new TrainingModel(manager, model, lora, baseModelDir, computeType);
    }

    /** How the base's linear layers load: NF4 for QLoRA (the embeddings, lm_head and router kept), else dense. */
    public static MistralCheckpoint.LinearFactory linears(Recipe.Model model) {
        return linears(model.quantize());
    }

    /** The same for a quantize value of the recipe (nf4 or none): a distillation teacher's. */
    public static MistralCheckpoint.LinearFactory linears(String quantize) {
        return "nf4".equals(quantize) ? Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION) : MistralCheckpoint.DENSE;
    }

    /** What the plan line says of the model and the adapter it trains. */
    public String describe(Recipe recipe) {
        List<NDArray> parameters = lora.parameters(ADAPTER_NAME);
        ModelConfig config = model.config();
        long adapterParameters = parameters.stream().mapToLong(p -> p.getShape().size()).sum();
        return String.format(Locale.ROOT, "model %s (%s, %d layers%s, %s), LoRA %,d parameters in %d arrays",
                baseModelDir, config.modelType().hfName(), config.numHiddenLayers(),
                config.isMixtureOfExperts() ? ", " + config.numLocalExperts() + " experts" : "",
                (recipe.model().quantize().equals("nf4") ? "NF4 base" : "full-precision base") + ", compute in "
                        + (model.computeType() == DataType.FLOAT16 ? "fp16 with dynamic loss scaling" : "fp32"),
                adapterParameters, parameters.size());
    }

    /**
     * model.compute_dtype: auto is float16 (with dynamic loss scaling) on a GPU, since DJL's PyTorch JNI has no
     * bfloat16, and float32 on the CPU, where float16 matmuls crawl.
     */
    public static DataType computeType(Recipe.Model model, Device device) {
        return switch (model.computeDtype()) {
            case "fp16" -> DataType.FLOAT16;
            case "fp32" -> DataType.FLOAT32;
            default -> device.isGpu() ? DataType.FLOAT16 : DataType.FLOAT32;
        };
    }

    @Override
    public void close() {
        model.close();
        manager.close();
    }
}
