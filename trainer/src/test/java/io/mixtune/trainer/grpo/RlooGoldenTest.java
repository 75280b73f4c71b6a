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
import io.mixtune.trainer.recipe.RlooConfig;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;

/**
 * RLOO against TRL 1.13 (interop/make_rloo_goldens.py; interop/GOLDENS.md, "RLOO"): RLOOTrainer's own
 * _generate_and_score_completions on fixed completions, rewards and per-token log-probs (advantages with the KL in the
 * reward, the leave-one-out baseline over scorable completions, normalize_advantages, reward_clip_range, and TRL's
 * metrics), and its _compute_loss on fixed log-probs (loss, d loss / d log-probs, clip ratios).
 */
class RlooGoldenTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    private static JsonNode golden(String name) throws IOException {
        try {
            return JSON.readTree(Path.of(RlooGoldenTest.class.getResource("/golden/rloo/" + name).toURI()).toFile());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
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
}
