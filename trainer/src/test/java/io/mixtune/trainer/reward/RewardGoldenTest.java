package io.mixtune.trainer.reward;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.training.GradientCollector;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.lora.adapter.AdapterMerge;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.LossScaler;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.StepContext;
import io.mixtune.trainer.run.TrainingModel;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Reward modelling against TRL 1.13's RewardTrainer (interop/make_reward_goldens.py; interop/GOLDENS.md, "Reward
 * models"): one forward/backward on the tiny Mistral and Mixtral with a PEFT reward adapter (LoRA + score head):
 * rewards, loss, TRL's metrics and the gradient of every LoRA weight and of the head.
 */
class RewardGoldenTest {
    private static final double LOSS_RTOL = 1e-5;
    private static final double GRADIENT_RTOL = 1e-4; // of the tensor's max |value|, as SftGoldenTest
    private static final ObjectMapper JSON = new ObjectMapper();

    static Path golden(String name) {
        try {
            return Path.of(RewardGoldenTest.class.getResource("/golden/reward/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    @ParameterizedTest
    @CsvSource({"mistral, plain", "mistral, margin", "mistral, center", "mixtral, plain", "mixtral, margin",
            "mixtral, center"})
    void oneStepEqualsTrlRewardTrainer(String model, String variant) throws IOException {
        JsonNode batchJson = JSON.readTree(golden("batch.json").toFile());
        JsonNode want = JSON.readTree(golden(model + "/expected.json").toFile()).get(variant);
        boolean margins = want.hasNonNull("margins");
        Recipe.Reward reward = new Recipe.Reward(want.hasNonNull("center_rewards_coefficient")
                ? want.get("center_rewards_coefficient").doubleValue() : null, margins, 0);
        RewardBatch batch = RewardBatch.of(samples(batchJson, margins ? want.get("margins") : null),
                new int[3], batchJson.get("pad_id").longValue(), margins);
        for (int r = 0; r < batch.positions().length; r++) {
            assertEquals(want.get("positions").get(r).longValue(), batch.positions()[r], "reward position of row " + r);
        }
        try (NDManager manager = NDManager.newBaseManager()) {
            LoraModel lora = goldenModel(model, manager);
            NDArray head = lora.modulesToSave(TrainingModel.ADAPTER_NAME).get(RewardHead.MODULE);
            List<String> report = new ArrayList<>();
            RewardMetrics metrics = new RewardMetrics();
            try (NDManager stepManager = manager.newSubManager();
                    GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                RewardStep.Terms terms = RewardStep.of(lora.model(), head, reward, batch, 0, stepManager);
                String name = model + "/" + variant;
                report.add(close(name + " loss", want.get("loss").doubleValue(), terms.loss().getFloat()));
                for (int r = 0; r < terms.rewards().length; r++) {
                    close(name + " reward row " + r, want.get("rewards").get(r).doubleValue(), terms.rewards()[r]);
                }
                metrics.add(terms.rewards(), terms.loss().getFloat());
                for (Map.Entry<String, Double> metric : metrics.values().entrySet()) {
                    report.add(close(name + " " + metric.getKey(),
                            want.get("metrics").get(metric.getKey()).doubleValue(), metric.getValue()));
                }
                assertEquals(want.get("metrics").size(), metrics.values().size(), "TRL's metric names: "
                        + want.get("metrics"));
                collector.backward(terms.objective());
            }
            try (SafetensorsReader grads = SafetensorsReader.open(golden(model).resolve(want.get("grads").asText()))) {
                report.add(compareGradients(model + "/" + variant + " gradients", lora, grads));
            }
            report.forEach(System.out::println);
        }
    }

    /** A step of two micro-batches (the pairs split 2 + 1) gives the same gradients with gradient checkpointing. */
    @ParameterizedTest
    @ValueSource(strings = {"mistral", "mixtral"})
    void gradientCheckpointingGivesThePlainGradients(String model) throws IOException {
        JsonNode batchJson = JSON.readTree(golden("batch.json").toFile());
        List<PreferenceSample> samples = samples(batchJson, null);
        long pad = batchJson.get("pad_id").longValue();
        List<RewardBatch> batches = List.of(RewardBatch.of(samples.subList(0, 2), new int[] {0, 1}, pad, false),
                RewardBatch.of(samples.subList(2, 3), new int[] {2}, pad, false));
        Recipe.Reward reward = new Recipe.Reward(0.01, false, 0);
        List<float[]> plain = new ArrayList<>();
        double[] losses = new double[2];
        for (boolean checkpointing : new boolean[] {false, true}) {
            try (NDManager manager = NDManager.newBaseManager()) {
                LoraModel lora = goldenModel(model, manager);
                CausalLm causalLm = lora.model();
                List<NDArray> parameters = lora.parameters(TrainingModel.ADAPTER_NAME);
                StepContext context = new StepContext(causalLm, parameters, manager,
                        new AdamW(parameters, 0.9, 0.999, 1e-8, 0), LossScaler.off(), 1.0,
                        causalLm.config().routerAuxLossCoef(), checkpointing, 11);
                RewardStep.Measured measured = RewardStep.gradients(reward,
                        lora.modulesToSave(TrainingModel.ADAPTER_NAME).get(RewardHead.MODULE), batches, context);
                losses[checkpointing ? 1 : 0] = measured.loss();
                for (int i = 0; i < parameters.size(); i++) {
                    float[] gradient;
                    try (NDArray g = parameters.get(i).getGradient()) {
                        gradient = g.toFloatArray();
                    }
                    if (!checkpointing) {
                        plain.add(gradient);
                    } else {
                        assertArrayEquals(plain.get(i), gradient, 1e-6f, "gradient of array " + i);
                    }
                }
            }
        }
        assertEquals(losses[0], losses[1], 1e-6, "loss");
        System.out.printf(Locale.ROOT, "%s checkpointed reward step: loss %.6f, as the plain step%n", model,
                losses[1]);
    }

    /** mixtune writes a loaded reward adapter back as PEFT does: the same tensors, task_type SEQ_CLS, score saved. */
    @Test
    void rewardAdapterRoundTripsInPeftFormat(@TempDir Path dir) throws IOException {
        try (NDManager manager = NDManager.newBaseManager()) {
            LoraModel lora = goldenModel("mistral", manager);
            PeftAdapter.save(lora, TrainingModel.ADAPTER_NAME, dir, "../model");
            JsonNode config = JSON.readTree(dir.resolve(PeftAdapter.CONFIG_FILE).toFile());
            assertEquals("SEQ_CLS", config.get("task_type").asText());
            assertEquals("[\"score\"]", config.get("modules_to_save").toString());
            try (SafetensorsReader ours = SafetensorsReader.open(dir.resolve(PeftAdapter.WEIGHTS_FILE));
                    SafetensorsReader peft = SafetensorsReader.open(golden("mistral/adapter").resolve(
                            PeftAdapter.WEIGHTS_FILE))) {
                assertEquals(peft.names(), ours.names());
                for (String key : peft.names()) {
                    assertArrayEquals(peft.readFloats(key), ours.readFloats(key), key);
                }
            }
        }
    }

    /**
     * merge-adapter folds a reward adapter into a MistralForSequenceClassification checkpoint: the LoRA deltas into
     * the weights, score.weight in place of lm_head, one label, pad id EOS (interop loads it with transformers).
     */
    @Test
    void mergeAdapterFoldsARewardModelIntoASequenceClassifier(@TempDir Path out) throws IOException {
        AdapterMerge.merge(modelDir("mistral"), golden("mistral/adapter"), out, null, Long.MAX_VALUE);
        JsonNode config = JSON.readTree(out.resolve("config.json").toFile());
        assertEquals("[\"MistralForSequenceClassification\"]", config.get("architectures").toString());
        assertEquals("{\"0\":\"LABEL_0\"}", config.get("id2label").toString());
        assertEquals(2, config.get("pad_token_id").intValue());
        try (SafetensorsReader merged = SafetensorsReader.open(out);
                SafetensorsReader adapter = SafetensorsReader.open(golden("mistral/adapter").resolve(
                        PeftAdapter.WEIGHTS_FILE))) {
            assertTrue(!merged.contains("lm_head.weight"), "a sequence classifier has no lm_head");
            assertArrayEquals(adapter.readFloats("base_model.model.score.weight"), merged.readFloats("score.weight"));
        }
    }

    @Test
    void aRewardAdapterIsNotACausalLmAdapterNorTheReverse() {
        try (NDManager manager = NDManager.newBaseManager()) {
            CausalLm model = MistralCheckpoint.load(modelDir("mistral"), manager, MistralCheckpoint.DENSE);
            LoraModel lora = new LoraModel(model);
            IllegalArgumentException asCausal = assertThrows(IllegalArgumentException.class,
                    () -> PeftAdapter.load(lora, golden("mistral/adapter"), "a"));
            assertTrue(asCausal.getMessage().contains("a reward model's adapter (task_type SEQ_CLS, modules_to_save "
                    + "[score]), not a causal LM's: score it with `mixtune reward`"), asCausal.getMessage());
            IllegalArgumentException asReward = assertThrows(IllegalArgumentException.class,
                    () -> PeftAdapter.load(lora, golden("../sft/mistral/adapter"), "b",
                            RewardHead.modulesToSave(model.config())));
            assertTrue(asReward.getMessage().contains("a causal LM's adapter (modules_to_save null), not a reward "
                    + "model's: it has no score head"), asReward.getMessage());
        }
    }

    @Test
    void aHeadOfAnotherHiddenSizeIsRefused(@TempDir Path adapter) {
        try (NDManager manager = NDManager.newBaseManager()) {
            // The SFT golden's LoRA with a head [1, 32], where the model's hidden size is 64.
            LoraModel written = new LoraModel(MistralCheckpoint.load(modelDir("mistral"), manager,
                    MistralCheckpoint.DENSE));
            PeftAdapter.load(written, golden("../sft/mistral/adapter"), TrainingModel.ADAPTER_NAME);
            written.addModuleToSave(TrainingModel.ADAPTER_NAME, RewardHead.MODULE,
                    manager.zeros(new ai.djl.ndarray.types.Shape(1, 32)));
            PeftAdapter.save(written, TrainingModel.ADAPTER_NAME, adapter, "../model");
            CausalLm model = MistralCheckpoint.load(modelDir("mistral"), manager, MistralCheckpoint.DENSE);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> PeftAdapter.load(
                    new LoraModel(model), adapter, "x", RewardHead.modulesToSave(model.config())));
            assertTrue(e.getMessage().contains("base_model.model.score.weight is [1, 32], this model's score is "
                    + "[1, 64]"), e.getMessage());
        }
    }

    private static Path modelDir(String model) {
        return golden("../sft/" + model + "/model").normalize();
    }

    /** The SFT golden's model with the reward adapter (LoRA + score head) loaded, in training mode. */
    private static LoraModel goldenModel(String model, NDManager manager) {
        CausalLm causalLm = MistralCheckpoint.load(modelDir(model), manager, MistralCheckpoint.DENSE);
        LoraModel lora = new LoraModel(causalLm);
        PeftAdapter.load(lora, golden(model + "/adapter"), TrainingModel.ADAPTER_NAME,
                RewardHead.modulesToSave(causalLm.config()));
        lora.setTraining(true);
        return lora;
    }

    private static List<PreferenceSample> samples(JsonNode batchJson, JsonNode margins) {
        List<PreferenceSample> samples = new ArrayList<>();
        int i = 0;
        for (JsonNode pair : batchJson.get("pairs")) {
            samples.add(new PreferenceSample(longs(pair.get("prompt_ids")), longs(pair.get("chosen_ids")),
                    longs(pair.get("rejected_ids")), margins == null ? null : margins.get(i).doubleValue(), "golden"));
            i++;
        }
        return samples;
    }

    /** Every gradient (LoRA A/B, the head) against TRL's, relative to the golden tensor's max |value|. */
    private static String compareGradients(String what, LoraModel lora, SafetensorsReader golden) {
        double worst = 0;
        String worstKey = null;
        List<NDArray> parameters = lora.parameters(TrainingModel.ADAPTER_NAME);
        List<String> names = lora.parameterNames(TrainingModel.ADAPTER_NAME);
        for (int p = 0; p < parameters.size(); p++) {
            String key = "base_model.model." + names.get(p) + ".weight";
            float[] actual;
            try (NDArray gradient = parameters.get(p).getGradient()) {
                actual = gradient.toFloatArray();
            }
            float[] expected = golden.readFloats(key);
            double scale = 0;
            double diff = 0;
            for (int i = 0; i < expected.length; i++) {
                scale = Math.max(scale, Math.abs(expected[i]));
                diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
            }
            if (diff / scale > worst) {
                worst = diff / scale;
                worstKey = key;
            }
        }
        assertEquals(golden.names().size(), parameters.size(), what + ": arrays compared vs in the golden file");
        assertTrue(names.contains(RewardHead.MODULE), "the head is trained");
        String line = String.format(Locale.ROOT, "%s: worst rel-to-max diff %.3g at %s (%d arrays)", what, worst,
                worstKey, parameters.size());
        assertTrue(worst <= GRADIENT_RTOL, line);
        return line;
    }

    private static String close(String what, double expected, double actual) {
        double relative = Math.abs(actual - expected) / Math.max(Math.abs(expected), 1e-6);
        assertTrue(relative <= LOSS_RTOL, String.format(Locale.ROOT, "%s: expected %.9g, got %.9g (rel diff %.3g)",
                what, expected, actual, relative));
        return String.format(Locale.ROOT, "%s: rel diff %.3g", what, relative);
    }

    private static long[] longs(JsonNode values) {
        long[] out = new long[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = values.get(i).longValue();
        }
        return out;
    }
}
