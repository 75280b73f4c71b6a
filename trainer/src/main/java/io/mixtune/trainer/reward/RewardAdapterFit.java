package io.mixtune.trainer.reward;

import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.InputDirectories;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

/**
 * Whether a reward adapter belongs on a base model, from the files alone (adapter_config.json, the safetensors
 * headers), before any weight loads: so that a command which would first spend minutes generating or a run which would
 * first tokenize stops at once. A reward model's adapter is required (a causal LM's is refused with what it is), its
 * score head must be [1, hidden_size] of the model, and each LoRA module must adapt a weight of the model with its
 * shape. base_model_name_or_path is not compared: it is where the base lay when the adapter was saved, and one model
 * sits at many paths (as {@code merge} decides for adapters). Two bases of one architecture and shapes but different
 * weights cannot be told apart here.
 */
public final class RewardAdapterFit {
    private RewardAdapterFit() {}

    /** @throws IllegalArgumentException starting with the adapter directory, saying what does not fit */
    public static void require(Path adapterDir, Path modelDir) {
        String problem = InputDirectories.adapterProblem(adapterDir);
        if (problem != null) {
            throw new IllegalArgumentException(adapterDir + ": " + problem);
        }
        Path configFile = adapterDir.resolve(PeftAdapter.CONFIG_FILE);
        PeftAdapter.readConfig(configFile, Set.of(RewardHead.MODULE));
        ModelConfig config = ModelConfig.read(modelDir.resolve("config.json"));
        List<String> problems = new ArrayList<>();
        try (SafetensorsReader adapter = SafetensorsReader.open(PeftAdapter.weightsFile(adapterDir));
                SafetensorsReader base = SafetensorsReader.open(modelDir)) {
            String headKey = PeftAdapter.moduleToSaveKey(RewardHead.MODULE);
            long[] expectedHead = RewardHead.shape(config);
            if (!adapter.contains(headKey)) {
                problems.add("no score head " + headKey);
            } else if (!Arrays.equals(adapter.info(headKey).shape(), expectedHead)) {
                problems.add("score head " + Arrays.toString(adapter.info(headKey).shape()) + " but the model's "
                        + "hidden_size " + config.hiddenSize() + " wants " + Arrays.toString(expectedHead));
            }
            for (String key : new TreeSet<>(adapter.names())) {
                String module = PeftAdapter.moduleOf(key);
                if (module == null || !key.endsWith(".lora_A.weight")) {
                    continue;
                }
                String weight = module + ".weight";
                if (!base.contains(weight)) {
                    // Experts may lie fused in the base (transformers 5's layout): loading checks those.
                    if (!module.contains(".experts")) {
                        problems.add(module + ": the " + config.modelType().hfName() + " model has no " + weight);
                    }
                    continue;
                }
                long[] shape = base.info(weight).shape();
                long[] a = adapter.info(key).shape();
                String bKey = key.substring(0, key.length() - ".lora_A.weight".length()) + ".lora_B.weight";
                long[] b = adapter.contains(bKey) ? adapter.info(bKey).shape() : null;
                if (shape.length != 2 || a.length != 2 || a[1] != shape[1] || b != null && b[0] != shape[0]) {
                    problems.add(module + ": lora_A " + Arrays.toString(a) + (b == null ? "" : " and lora_B "
                            + Arrays.toString(b)) + " do not fit the model's weight " + Arrays.toString(shape));
                }
            }
        }
        if (!problems.isEmpty()) {
            int shown = Math.min(3, problems.size());
            throw new IllegalArgumentException(adapterDir + ": a reward model for another base than " + modelDir
                    + ": " + String.join("; ", problems.subList(0, shown))
                    + (problems.size() > shown ? "; ... and " + (problems.size() - shown) + " more" : ""));
        }
    }
}
