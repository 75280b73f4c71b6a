package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import io.mixtune.lora.adapter.AdapterMerge;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.DType;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.io.TempDir;

/**
 * The averaged adapter (ranks concatenated) computes what the average of the merged models computes: logits within
 * 1e-5, on Mistral and on Mixtral with every expert adapted, for adapters of different ranks, scales (one rsLoRA) and
 * targets.
 */
class AdapterAverageParityTest {
    private static final List<Double> WEIGHTS = List.of(1.0, 2.0, 1.0);

    static ModelConfig config(boolean mixtral) {
        return mixtral
                ? new ModelConfig(ModelConfig.ModelType.MIXTRAL, 32, 48, 2, 4, 2, 8, 61, 1e-5, 1e4, null, 64, false, 3, 2,
                        0.02, 1, 2)
                : new ModelConfig(ModelConfig.ModelType.MISTRAL, 32, 48, 2, 4, 2, 8, 61, 1e-5, 1e4, 16, 64, false, 0, 0,
                        0.0, 1, 2);
    }

    @ParameterizedTest(name = "mixtral={0}")
    @ValueSource(booleans = {false, true})
    void averagedAdapterEqualsTheAverageOfMergedModels(boolean mixtral, @TempDir Path dir) {
        Path base = dir.resolve("base");
        RandomCheckpoint.write(config(mixtral), base, 3, DType.F32, Long.MAX_VALUE, 0.3);
        List<String> experts = mixtral ? List.of("w1", "w2", "w3") : List.of("gate_proj", "down_proj");
        List<LoraConfig> configs = List.of(
                new LoraConfig(4, 8, 0, List.of("q_proj", "v_proj"), false, Map.of(), Map.of()),
                new LoraConfig(2, 4, 0, join(List.of("q_proj", "o_proj"), experts), true, Map.of(), Map.of()),
                new LoraConfig(3, 3, 0, join(List.of("v_proj"), experts), false, Map.of("v_proj", 5), Map.of()));
        List<Path> adapters = new ArrayList<>();
        List<MergeConfig.Model> merged = new ArrayList<>();
        for (int i = 0; i < configs.size(); i++) {
            Path adapter = dir.resolve("adapter-" + i);
            try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(base, manager)) {
                LoraModel lora = new LoraModel(model);
                lora.addAdapter("default", configs.get(i), LoraModel.Init.RANDOM, 10 + i);
                PeftAdapter.save(lora, "default", adapter, base.toString());
            }
            adapters.add(adapter);
            Path mergedModel = dir.resolve("merged-" + i);
            AdapterMerge.merge(base, adapter, mergedModel, null, Long.MAX_VALUE);
            merged.add(new MergeConfig.Model(mergedModel, new MergeConfig.ModelParameters(WEIGHTS.get(i), null)));
        }
        Path averagedAdapter = dir.resolve("averaged-adapter");
        MergeReport report = ModelMerge.run(new MergeConfig(MergeMethod.LINEAR, null, MergeConfig.models(adapters, WEIGHTS),
                null, null, null, null, null, averagedAdapter), false, Long.MAX_VALUE);
        assertTrue(report.adapters());
        Path averagedModel = dir.resolve("averaged-model");
        ModelMerge.run(new MergeConfig(MergeMethod.LINEAR, null, merged, null, null, null, null, null, averagedModel),
                false, Long.MAX_VALUE);

        float[] viaAdapter = logits(base, averagedAdapter);
        float[] viaModels = logits(averagedModel, null);
        float[] baseLogits = logits(base, null);
        double diff = maxDiff(viaAdapter, viaModels);
        assertTrue(diff <= 1e-5, "averaged adapter vs averaged merged models: max |logit diff| " + diff);
        assertTrue(maxDiff(viaAdapter, baseLogits) > 1e-2, "the adapters must move the logits for this to mean anything");

        // Re-compressed to a rank no module exceeds, the adapter is the same sum (re-factored by SVD).
        Path recompressed = dir.resolve("recompressed");
        MergeReport exact = ModelMerge.run(new MergeConfig(MergeMethod.LINEAR, null, MergeConfig.models(adapters, WEIGHTS),
                null, null, 4, null, null, recompressed), false, Long.MAX_VALUE);
        assertTrue(exact.compressedModules() > 0, "modules with summed rank above 4 were cut");
        LoraConfig written = PeftAdapter.readConfig(recompressed.resolve(PeftAdapter.CONFIG_FILE));
        assertEquals(4, written.r());
        assertTrue(maxDiff(logits(base, recompressed), viaModels) > 0, "rank 4 is lossy here");
        assertTrue(exact.maxError() > 0 && exact.maxError() < 1, "error " + exact.maxError());
    }

    private static List<String> join(List<String> a, List<String> b) {
        List<String> all = new ArrayList<>(a);
        all.addAll(b);
        return all;
    }

    private static float[] logits(Path model, Path adapter) {
        try (NDManager manager = NDManager.newBaseManager(); CausalLm lm = MistralCheckpoint.load(model, manager)) {
            if (adapter != null) {
                PeftAdapter.load(new LoraModel(lm), adapter, "averaged");
            }
            return lm.forward(manager.create(new long[][] {{1, 17, 3, 44, 29, 60, 8, 5, 33}}),
                    manager.arange(0, 9, 1, DataType.INT64).reshape(1, 9), null).toFloatArray();
        }
    }

    private static double maxDiff(float[] a, float[] b) {
        double worst = 0;
        for (int i = 0; i < a.length; i++) {
            worst = Math.max(worst, Math.abs(a[i] - b[i]));
        }
        return worst;
    }
}
