package io.mixtune.trainer.grpo;

import static io.mixtune.trainer.dpo.DpoGoldenTest.close;
import static io.mixtune.trainer.dpo.DpoGoldenTest.iterable;
import static io.mixtune.trainer.dpo.DpoGoldenTest.longs1;
import static org.junit.jupiter.api.Assertions.assertEquals;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.training.GradientCollector;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Scalars;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.dpo.DpoGoldenTest;
import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.TrainingBatch;
import io.mixtune.trainer.recipe.RlooConfig;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;

/**
 * RLOO against TRL 1.13 (interop/make_rloo_goldens.py; interop/GOLDENS.md, "RLOO"): RLOOTrainer's own
 * _generate_and_score_completions on fixed completions, rewards and per-token log-probs (advantages with the KL in the
 * reward, the leave-one-out baseline over scorable completions, normalize_advantages, reward_clip_range, and TRL's
 * metrics), its _compute_loss on fixed log-probs (loss, d loss / d log-probs, clip ratios), and one RLOOTrainer step
 * on the tiny Mixtral of the SFT golden (old and reference log-probs, advantages with the KL, loss, every LoRA
 * gradient).
 */
class RlooGoldenTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    private static Path file(String name) {
        try {
            return Path.of(RlooGoldenTest.class.getResource("/golden/rloo/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    private static JsonNode golden(String name) throws IOException {
        return JSON.readTree(file(name).toFile());
    }

    static RlooConfig config(int numGenerations, double beta, double epsilon, Double epsilonHigh, int numIterations,
            List<Double> weights, boolean normalize, List<Double> clipRange, boolean maskTruncated) {
        return new RlooConfig(numGenerations, 5, 1.0, 1.0, 0, null, 1.0, beta, epsilon, epsilonHigh, numIterations,
                List.of(), weights, normalize, clipRange, maskTruncated);
    }

    private static List<Double> doubles(JsonNode values) {
        List<Double> out = new ArrayList<>();
        if (values != null && !values.isNull()) {
            values.forEach(v -> out.add(v.doubleValue()));
        }
        return out;
    }

    private static void near(double expected, double actual, String what) {
        assertEquals(expected, actual, 1e-5 * Math.max(1, Math.abs(expected)), what);
    }

    @Test
    void advantagesAndMetricsEqualTrlGenerateAndScore() throws IOException {
        JsonNode root = golden("advantages.json");
        int g = root.get("num_generations").asInt();
        long eos = root.get("eos_id").longValue();
        JsonNode completionsJson = root.get("completions");
        int n = completionsJson.size();
        long[][] completions = new long[n][];
        boolean[] truncated = new boolean[n];
        float[][] old = new float[n][];
        float[][] reference = new float[n][];
        for (int i = 0; i < n; i++) {
            completions[i] = longs1(completionsJson.get(i));
            truncated[i] = completions[i][completions[i].length - 1] != eos;
            old[i] = new float[completions[i].length];
            reference[i] = new float[completions[i].length];
            for (int t = 0; t < old[i].length; t++) {
                old[i][t] = root.get("old_per_token_logps").get(i).get(t).floatValue();
                reference[i][t] = root.get("ref_per_token_logps").get(i).get(t).floatValue();
            }
        }
        int compared = 0;
        for (Map.Entry<String, JsonNode> entry : iterable(root.get("cases"))) {
            String name = entry.getKey();
            JsonNode c = entry.getValue();
            JsonNode clip = c.get("reward_clip_range");
            RlooConfig rloo = config(g, c.get("beta").doubleValue(), 0.2, null, 1, doubles(c.get("reward_weights")),
                    c.get("normalize_advantages").asBoolean(), clip.isNull() ? null : doubles(clip),
                    c.get("mask_truncated_completions").asBoolean());
            List<String> names = new ArrayList<>();
            c.get("reward_funcs").forEach(f -> names.add(f.asText()));
            double[][] scores = new double[n][names.size()];
            double[] weights = new double[names.size()];
            for (int f = 0; f < names.size(); f++) {
                weights[f] = rloo.rewardWeights().isEmpty() ? 1 : rloo.rewardWeights().get(f);
                for (int i = 0; i < n; i++) {
                    JsonNode score = c.get("rewards").get(f).get(i);
                    scores[i][f] = score.isNull() ? Double.NaN : score.doubleValue();
                }
            }
            boolean[] counted = new boolean[n];
            for (int i = 0; i < n; i++) {
                counted[i] = !(rloo.maskTruncatedCompletions() && truncated[i]);
                assertEquals(counted[i] ? 1 : 0, c.get("completion_mask").get(i).get(0).asInt(), name + " mask " + i);
            }
            GroupAdvantages.Result result = new PolicyGradient.Rloo(rloo).advantages(scores, weights, names,
                    rloo.beta() != 0 ? old : null, rloo.beta() != 0 ? reference : null, counted);
            for (int i = 0; i < n; i++) {
                near(c.get("advantages").get(i).doubleValue(), result.advantages()[i], name + " advantage " + i);
            }
            Map<String, Double> metrics = new LinkedHashMap<>(GrpoObjective.completionMetrics(completions, truncated));
            metrics.putAll(result.metrics());
            assertEquals(new TreeSet<>(List.copyOf(iterableKeys(c.get("metrics")))), new TreeSet<>(metrics.keySet()),
                    name + ": the names TRL logs");
            for (Map.Entry<String, JsonNode> metric : iterable(c.get("metrics"))) {
                near(metric.getValue().doubleValue(), metrics.get(metric.getKey()), name + " " + metric.getKey());
            }
            compared++;
        }
        assertEquals(7, compared);
    }

    private static List<String> iterableKeys(JsonNode object) {
        List<String> keys = new ArrayList<>();
        object.fieldNames().forEachRemaining(keys::add);
        return keys;
    }

    @Test
    void lossGradientAndClipRatiosEqualTrlComputeLoss() throws IOException {
        JsonNode root = golden("losses.json");
        JsonNode tensors = root.get("tensors");
        JsonNode mask = tensors.get("mask");
        List<Float> policy = new ArrayList<>();
        List<Float> entropies = new ArrayList<>();
        List<int[]> at = new ArrayList<>();
        for (int r = 0; r < mask.size(); r++) {
            for (int t = 0; t < mask.get(r).size(); t++) {
                if (mask.get(r).get(t).asInt() == 1) {
                    policy.add(tensors.get("policy").get(r).get(t).floatValue());
                    entropies.add(tensors.get("entropies").get(r).get(t).floatValue());
                    at.add(new int[] {r, t});
                }
            }
        }
        int n = policy.size();
        float[] policyValues = new float[n];
        float[] advantages = new float[n];
        boolean[] counted = new boolean[n];
        int[] rows = new int[n];
        for (int t = 0; t < n; t++) {
            policyValues[t] = policy.get(t);
            rows[t] = at.get(t)[0];
            advantages[t] = tensors.get("advantages").get(rows[t]).floatValue();
            counted[t] = true;
        }
        int compared = 0;
        for (Map.Entry<String, JsonNode> entry : iterable(root.get("cases"))) {
            String name = entry.getKey();
            JsonNode c = entry.getValue();
            boolean onPolicy = c.get("on_policy").asBoolean();
            RlooConfig rloo = config(2, 0, c.get("epsilon").doubleValue(),
                    c.get("epsilon_high").isNull() ? null : c.get("epsilon_high").doubleValue(), onPolicy ? 1 : 2,
                    List.of(), false, null, false);
            // the old policy's tokens: the policy's, the row's shift on its first token (its sum is TRL's old_logps)
            float[] old = policyValues.clone();
            for (int t = 0; t < n; t++) {
                if (t == 0 || rows[t] != rows[t - 1]) {
                    old[t] += (float) root.get("shifts").get(rows[t]).doubleValue();
                }
            }
            GrpoLoss.Tokens tokens = new GrpoLoss.Tokens(onPolicy ? null : old, null, advantages, counted, rows,
                    mask.size());
            try (NDManager manager = NDManager.newBaseManager()) {
                NDArray logProbs = manager.create(policyValues);
                logProbs.setRequiresGradient(true);
                GrpoLoss.Objective objective;
                try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                    objective = new PolicyGradient.Rloo(rloo).objective(logProbs, tokens, 1, n, manager);
                    collector.backward(objective.value());
                }
                close(name + " loss", c.get("loss").doubleValue(), objective.value().getFloat(), 1e-5);
                float[] grad = logProbs.getGradient().toFloatArray();
                for (int t = 0; t < n; t++) {
                    double want = c.get("grad").get(at.get(t)[0]).get(at.get(t)[1]).doubleValue();
                    assertEquals(want, grad[t], 1e-5 * Math.abs(want) + 1e-8, name + " d loss / d log pi " + t);
                }
                Map<String, Double> metrics = new LinkedHashMap<>(objective.metrics());
                metrics.put("entropy", entropyMean(entropies));
                assertEquals(new TreeSet<>(iterableKeys(c.get("metrics"))), new TreeSet<>(metrics.keySet()), name);
                for (Map.Entry<String, JsonNode> metric : iterable(c.get("metrics"))) {
                    near(metric.getValue().doubleValue(), metrics.get(metric.getKey()), name + " " + metric.getKey());
                }
            }
            compared++;
        }
        assertEquals(3, compared);
    }

    private static double entropyMean(List<Float> entropies) {
        float[] values = new float[entropies.size()];
        boolean[] all = new boolean[values.length];
        for (int t = 0; t < values.length; t++) {
            values[t] = entropies.get(t);
            all[t] = true;
        }
        return GrpoLoss.maskedMean(values, all);
    }

    /** Accumulation divides the loss and its gradient, as transformers' Trainer divides RLOO's returned loss. */
    @Test
    void accumulationDividesTheLoss() {
        RlooConfig rloo = config(2, 0, 0.2, null, 1, List.of(), false, null, false);
        GrpoLoss.Tokens tokens = new GrpoLoss.Tokens(null, null, new float[] {1f, 1f, -2f}, new boolean[] {true, true,
            true}, new int[] {0, 0, 1}, 2);
        try (NDManager manager = NDManager.newBaseManager()) {
            NDArray policy = manager.create(new float[] {-1f, -2f, -0.5f});
            float one = new PolicyGradient.Rloo(rloo).objective(policy, tokens, 1, 3, manager).value().getFloat();
            float three = new PolicyGradient.Rloo(rloo).objective(policy, tokens, 3, 3, manager).value().getFloat();
            // ratio 1: -(1 + -2) / 2 rows
            assertEquals(0.5f, one, 1e-7);
            assertEquals(one / 3, three, 1e-7);
        }
    }

    /** The per-token log-probs of every row, without gradient: the adapter on (the sampling policy) or off. */
    private static float[] logProbs(LoraModel lora, TrainingBatch batch, boolean adapter, double temperature,
            NDManager manager) {
        lora.setAdaptersEnabled(adapter);
        try (NDManager pass = manager.newSubManager()) {
            CausalLm model = lora.model();
            CausalLmLoss.Forward forward = CausalLmLoss.forward(model, batch, pass, OptionalLong.empty());
            return CausalLmLoss.targetLogProbs(model, forward.states(), batch, pass, null, false, temperature)
                    .toFloatArray();
        } finally {
            lora.setAdaptersEnabled(true);
        }
    }

    @Test
    void oneStepEqualsTrlRlooTrainer() throws IOException {
        JsonNode batchJson = golden("step/batch.json");
        JsonNode want = golden("step/expected.json");
        int g = batchJson.get("num_generations").asInt();
        double temperature = want.get("temperature").doubleValue();
        RlooConfig rloo = new RlooConfig(g, batchJson.get("max_completion_length").asInt(), temperature, 1.0, 0, null,
                1.0, want.get("beta").doubleValue(), 0.2, null, 1, List.of(), List.of(), false, null, false);
        GrpoGoldenTest.StepBatch read = GrpoGoldenTest.StepBatch.read(batchJson);
        int rows = read.completions().length;
        long[][] completions = read.completions();
        double[][] scores = read.scores();
        int tokenCount = read.tokens();
        TrainingBatch batch = read.batch();
        boolean[] counted = new boolean[rows];
        java.util.Arrays.fill(counted, true);
        try (NDManager manager = NDManager.newBaseManager()) {
            LoraModel lora = DpoGoldenTest.goldenModel(batchJson, manager);
            CausalLm model = lora.model();
            float[] oldFlat = logProbs(lora, batch, true, temperature, manager);
            float[] referenceFlat = logProbs(lora, batch, false, temperature, manager);
            float[][] old = new float[rows][];
            float[][] reference = new float[rows][];
            float[] tokenAdvantages = new float[tokenCount];
            boolean[] mask = new boolean[tokenCount];
            int[] rowOf = new int[tokenCount];
            int t = 0;
            for (int i = 0; i < rows; i++) {
                old[i] = new float[completions[i].length];
                reference[i] = new float[completions[i].length];
                for (int k = 0; k < completions[i].length; k++, t++) {
                    old[i][k] = oldFlat[t];
                    reference[i][k] = referenceFlat[t];
                    assertEquals(want.get("old_per_token_logps").get(i).get(k).doubleValue(), old[i][k], 2e-5, "old");
                    assertEquals(want.get("ref_per_token_logps").get(i).get(k).doubleValue(), reference[i][k], 2e-5,
                            "reference");
                    mask[t] = true;
                    rowOf[t] = i;
                }
            }
            GroupAdvantages.Result advantages = new PolicyGradient.Rloo(rloo).advantages(scores, new double[] {1},
                    List.of("step_reward"), old, reference, counted);
            for (int i = 0, at = 0; i < rows; i++) {
                near(want.get("advantages").get(i).doubleValue(), advantages.advantages()[i], "advantage " + i);
                for (int k = 0; k < completions[i].length; k++, at++) {
                    tokenAdvantages[at] = advantages.advantages()[i];
                }
            }
            List<String> report = new ArrayList<>();
            report.add(close("rloo kl", want.get("metrics").get("kl").doubleValue(),
                    advantages.metrics().get("kl"), 1e-5));
            GrpoLoss.Tokens tokens = new GrpoLoss.Tokens(null, null, tokenAdvantages, mask, rowOf, rows);
            double coefficient = want.get("aux_coef").doubleValue();
            try (NDManager step = manager.newSubManager();
                    GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                CausalLmLoss.Forward forward = CausalLmLoss.forward(model, batch, step, OptionalLong.empty());
                CausalLmLoss.TokenStatistics[] statistics = new CausalLmLoss.TokenStatistics[1];
                NDArray policy = CausalLmLoss.targetLogProbs(model, forward.states(), batch, step, statistics, false,
                        temperature);
                GrpoLoss.Objective objective = new PolicyGradient.Rloo(rloo).objective(policy, tokens, 1, tokenCount,
                        step);
                NDArray loss = objective.value().add(Scalars.times(forward.loadBalancing(), coefficient));
                report.add(close("rloo loss", want.get("loss").doubleValue(), loss.getFloat(), 1e-5));
                report.add(close("rloo aux_loss", want.get("metrics").get("aux_loss").doubleValue(),
                        forward.loadBalancing().getFloat(), 1e-5));
                report.add(close("rloo entropy", want.get("metrics").get("entropy").doubleValue(),
                        GrpoLoss.maskedMean(statistics[0].entropies(), mask), 1e-5));
                collector.backward(loss);
            }
            try (SafetensorsReader grads = SafetensorsReader.open(file("step/" + want.get("grads").asText()))) {
                report.add(DpoGoldenTest.compareGradients("rloo gradients", lora, grads));
            }
            report.forEach(System.out::println);
        }
    }
}
