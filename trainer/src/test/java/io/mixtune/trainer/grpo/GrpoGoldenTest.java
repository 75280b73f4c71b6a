package io.mixtune.trainer.grpo;

import static io.mixtune.trainer.dpo.DpoGoldenTest.close;
import static io.mixtune.trainer.dpo.DpoGoldenTest.iterable;
import static io.mixtune.trainer.dpo.DpoGoldenTest.longs1;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

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
import io.mixtune.trainer.dpo.PreferenceBatch;
import io.mixtune.trainer.recipe.GrpoConfig;
import io.mixtune.trainer.reward.RewardScorer;
import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.TrainingBatch;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * GRPO against TRL 1.13 (interop/make_grpo_goldens.py; interop/GOLDENS.md, "GRPO"): TRL's own
 * GRPOTrainer._compute_loss on fixed per-token log-probs for every loss type (loss, its gradient, kl and clip_ratio/*),
 * its _generate_and_score_completions on fixed completions and rewards (advantages and reward metrics), and one step
 * of GRPOTrainer on the tiny Mixtral of the SFT golden (loss and every LoRA gradient).
 */
class GrpoGoldenTest {
    private static final double RTOL = 1e-5;
    private static final ObjectMapper JSON = new ObjectMapper();

    private static Path golden(String name) {
        try {
            return Path.of(GrpoGoldenTest.class.getResource("/golden/grpo/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    static GrpoConfig config(int numGenerations, int maxCompletionLength, double temperature, double beta,
            double epsilon, Double epsilonHigh, Double delta, String lossType, String scaleRewards, String aggregation,
            List<Double> weights, boolean maskTruncated) {
        return config(numGenerations, maxCompletionLength, temperature, beta, epsilon, epsilonHigh, delta, lossType,
                scaleRewards, aggregation, weights, maskTruncated, "token");
    }

    static GrpoConfig config(int numGenerations, int maxCompletionLength, double temperature, double beta,
            double epsilon, Double epsilonHigh, Double delta, String lossType, String scaleRewards, String aggregation,
            List<Double> weights, boolean maskTruncated, String importanceSamplingLevel) {
        return new GrpoConfig(numGenerations, maxCompletionLength, temperature, 1.0, 0, null, 1.0, beta, epsilon,
                epsilonHigh, delta, lossType, scaleRewards, aggregation, 1, List.of(), weights, maskTruncated, 1.05,
                1.0, true, importanceSamplingLevel);
    }

    private static Double orNull(JsonNode value) {
        return value == null || value.isNull() ? null : value.doubleValue();
    }

    @Test
    void lossGradientAndMetricsOfEveryLossTypeEqualTrlComputeLoss() throws IOException {
        assertEquals(10, compareLosses("losses.json"));
    }

    /**
     * GSPO (importance_sampling_level sequence): one ratio per completion, clipping binding at GSPO's epsilon 3e-4 /
     * 4e-4, a completion masked whole (its ratio 1, yet counted in TRL's clip means of (B, 1) ratios) and on-policy.
     */
    @Test
    void sequenceLevelLossGradientAndMetricsEqualTrlComputeLoss() throws IOException {
        assertEquals(8, compareLosses("gspo_losses.json"));
    }

    /** The cases of a losses golden: each token of a row's length is a token, counted where the mask says. */
    private static int compareLosses(String file) throws IOException {
        JsonNode root = JSON.readTree(golden(file).toFile());
        JsonNode tensors = root.get("tensors");
        JsonNode mask = tensors.get("mask");
        List<Boolean> countedTokens = new ArrayList<>();
        List<Float> policy = new ArrayList<>();
        List<Float> old = new ArrayList<>();
        List<Float> reference = new ArrayList<>();
        List<Float> entropies = new ArrayList<>();
        List<Integer> rows = new ArrayList<>();
        List<int[]> at = new ArrayList<>();
        float[] rowAdvantages = DpoGoldenTest.floats(tensors.get("advantages"));
        for (int r = 0; r < mask.size(); r++) {
            for (int t = 0; t < mask.get(r).size(); t++) {
                boolean isToken = root.has("lengths") ? t < root.get("lengths").get(r).asInt()
                        : mask.get(r).get(t).asInt() == 1;
                if (isToken) {
                    countedTokens.add(mask.get(r).get(t).asInt() == 1);
                    policy.add(tensors.get("policy").get(r).get(t).floatValue());
                    old.add(tensors.get("old").get(r).get(t).floatValue());
                    reference.add(tensors.get("reference").get(r).get(t).floatValue());
                    entropies.add(tensors.get("entropies").get(r).get(t).floatValue());
                    rows.add(r);
                    at.add(new int[] {r, t});
                }
            }
        }
        int n = policy.size();
        float[] advantages = new float[n];
        boolean[] counted = new boolean[n];
        int[] rowOf = new int[n];
        for (int t = 0; t < n; t++) {
            rowOf[t] = rows.get(t);
            advantages[t] = rowAdvantages[rowOf[t]];
            counted[t] = countedTokens.get(t);
        }
        int compared = 0;
        for (Map.Entry<String, JsonNode> entry : iterable(root.get("cases"))) {
            String name = entry.getKey();
            JsonNode c = entry.getValue();
            GrpoConfig grpo = config(2, c.get("max_completion_length").asInt(), 1.0, c.get("beta").doubleValue(),
                    c.get("epsilon").doubleValue(), orNull(c.get("epsilon_high")), orNull(c.get("delta")),
                    c.get("loss_type").asText(), "group", "sum_then_normalize", List.of(), false,
                    c.has("importance_sampling_level") ? c.get("importance_sampling_level").asText() : "token");
            boolean onPolicy = c.has("old_per_token_logps") && !c.get("old_per_token_logps").asBoolean();
            GrpoLoss.Tokens tokens = new GrpoLoss.Tokens(onPolicy ? null : toArray(old),
                    grpo.beta() != 0 ? toArray(reference) : null,
                    advantages, counted, rowOf, mask.size());
            double items = c.get("num_items_in_batch").isNull() ? countedTokens.stream().filter(b -> b).count()
                    : c.get("num_items_in_batch").doubleValue();
            float[] weights = GrpoLoss.weights(grpo, tokens, c.get("gradient_accumulation").asInt(), items);
            try (NDManager manager = NDManager.newBaseManager()) {
                NDArray logProbs = manager.create(toArray(policy));
                logProbs.setRequiresGradient(true);
                GrpoLoss.Objective objective;
                try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                    objective = GrpoLoss.objective(grpo, logProbs, tokens, weights, manager);
                    collector.backward(objective.value());
                }
                close(name + " loss", c.get("loss").doubleValue(), objective.value().getFloat(), RTOL);
                float[] grad = logProbs.getGradient().toFloatArray();
                for (int t = 0; t < n; t++) {
                    double want = c.get("grad").get(at.get(t)[0]).get(at.get(t)[1]).doubleValue();
                    assertEquals(want, grad[t], 1e-5 * Math.abs(want) + 1e-8, name + " d loss / d log pi " + t);
                }
                Map<String, Double> metrics = new LinkedHashMap<>(objective.metrics());
                metrics.put("entropy", GrpoLoss.maskedMean(toArray(entropies), counted));
                for (Map.Entry<String, JsonNode> metric : iterable(c.get("metrics"))) {
                    assertTrue(metrics.containsKey(metric.getKey()), name + ": TRL logs " + metric.getKey());
                    assertEquals(metric.getValue().doubleValue(), metrics.get(metric.getKey()), 1e-6,
                            name + " " + metric.getKey());
                }
                assertEquals(keys(c.get("metrics")).size(), metrics.size(), name + ": the names TRL logs " + metrics
                        .keySet());
            }
            compared++;
        }
        return compared;
    }

    /**
     * normalize_then_sum, one function that scored a single completion of a group (the others None): TRL's nanstd of
     * one value is NaN, so that completion's normalised score is NaN, but its nansum over the functions is 0, not NaN
     * (only a row every function left None is unscorable), and it counts in the batch's mean and std. The advantages are
     * TRL 1.13's _generate_and_score_completions lines (normalize_then_sum branch, trl.trainer.utils.nanstd) run on
     * these scores in float32.
     */
    @Test
    void normalizeThenSumCountsAScoredCompletionWhoseGroupHasNoStdAsTrl() {
        GrpoConfig grpo = config(4, 8, 1.0, 0, 0.2, null, null, "dapo", "group", "normalize_then_sum", List.of(),
                false);
        double nan = Double.NaN;
        double[][] scores = {{1.0}, {nan}, {nan}, {nan}, {0.2}, {0.5}, {0.9}, {0.1}};
        float[] advantages = GroupAdvantages.of(grpo, scores, new double[] {1.0}, List.of("f")).advantages();
        double[] trl = {-2.7534687419006332e-08, 0, 0, 0, -0.7228139042854309, 0.2409380078315735,
            1.5259405374526978, -1.0440645217895508};
        for (int i = 0; i < trl.length; i++) {
            assertEquals(trl[i], advantages[i], 1e-5 * Math.max(1, Math.abs(trl[i])), "advantage " + i);
        }
    }

    /**
     * cispo with delta set: TRL caps coef_1 at delta in the grpo/bnpo/dr_grpo/dapo branch only, so cispo's loss and
     * its cispo_clip_ratio see the uncapped ratio (here 1.5 > epsilon_high 1.2 with a positive advantage: clipped).
     */
    @Test
    void cispoClipRatioIgnoresDeltaAsTrl() {
        GrpoConfig grpo = config(2, 8, 1.0, 0, 0.2, 1.2, 1.1, "cispo", "group", "sum_then_normalize", List.of(), false);
        GrpoLoss.Tokens tokens = new GrpoLoss.Tokens(new float[] {0f}, null, new float[] {1f}, new boolean[] {true},
                new int[] {0}, 1);
        try (NDManager manager = NDManager.newBaseManager()) {
            NDArray policy = manager.create(new float[] {(float) Math.log(1.5)});
            GrpoLoss.Objective objective = GrpoLoss.objective(grpo, policy, tokens,
                    GrpoLoss.weights(grpo, tokens, 1, 1), manager);
            assertEquals(1.0, objective.metrics().get("cispo_clip_ratio"), 0);
        }
    }

    @Test
    void advantagesAndRewardMetricsEqualTrlGenerateAndScore() throws IOException {
        JsonNode root = JSON.readTree(golden("advantages.json").toFile());
        int g = root.get("num_generations").asInt();
        JsonNode completionsJson = root.get("completions");
        long[][] completions = new long[completionsJson.size()][];
        for (int i = 0; i < completions.length; i++) {
            completions[i] = longs1(completionsJson.get(i));
        }
        long eos = root.get("eos_id").longValue();
        boolean[] truncated = new boolean[completions.length];
        for (int i = 0; i < completions.length; i++) {
            truncated[i] = completions[i][completions[i].length - 1] != eos;
        }
        for (Map.Entry<String, JsonNode> entry : iterable(root.get("cases"))) {
            String name = entry.getKey();
            JsonNode c = entry.getValue();
            List<Double> weights = new ArrayList<>();
            if (!c.get("reward_weights").isNull()) {
                c.get("reward_weights").forEach(w -> weights.add(w.doubleValue()));
            }
            GrpoConfig grpo = config(g, root.get("max_completion_length").asInt(), 1.0, 0, 0.2, null, null, "dapo",
                    c.get("scale_rewards").asText(), c.get("multi_objective_aggregation").asText(), weights,
                    c.get("mask_truncated_completions").asBoolean());
            List<String> names = new ArrayList<>();
            c.get("reward_funcs").forEach(f -> names.add(f.asText()));
            double[][] scores = new double[completions.length][names.size()];
            for (int f = 0; f < names.size(); f++) {
                for (int i = 0; i < completions.length; i++) {
                    JsonNode value = c.get("rewards").get(f).get(i);
                    scores[i][f] = value.isNull() ? Double.NaN : value.doubleValue();
                }
            }
            double[] w = weights.isEmpty() ? new double[names.size()] : weights.stream().mapToDouble(x -> x).toArray();
            if (weights.isEmpty()) {
                java.util.Arrays.fill(w, 1.0);
            }
            GroupAdvantages.Result result = GroupAdvantages.of(grpo, scores, w, names);
            for (int i = 0; i < completions.length; i++) {
                double want = c.get("advantages").get(i).doubleValue();
                assertEquals(want, result.advantages()[i], 1e-5 * Math.max(1, Math.abs(want)), name + " advantage "
                        + i);
                boolean counted = !(grpo.maskTruncatedCompletions() && truncated[i]);
                assertEquals(counted ? 1 : 0, c.get("completion_mask").get(i).get(0).asInt(), name + " mask " + i);
            }
            Map<String, Double> metrics = new LinkedHashMap<>(GrpoObjective.completionMetrics(completions, truncated));
            metrics.putAll(result.metrics());
            assertEquals(keys(c.get("metrics")), new ArrayList<>(metrics.keySet()), name + ": TRL's names, in order");
            for (Map.Entry<String, JsonNode> metric : iterable(c.get("metrics"))) {
                double want = metric.getValue().doubleValue();
                assertEquals(want, metrics.get(metric.getKey()), 1e-6 * Math.max(1, Math.abs(want)),
                        name + " " + metric.getKey());
            }
        }
    }

    @Test
    void builtInRewardsEqualTrlRewards() throws IOException {
        JsonNode root = JSON.readTree(golden("rewards.json").toFile());
        List<String> texts = new ArrayList<>();
        root.get("think_texts").forEach(t -> texts.add(t.asText()));
        List<long[]> ids = new ArrayList<>();
        root.get("ids").forEach(i -> ids.add(longs1(i)));
        RewardFunctions.Named think = RewardFunctions.of("think_format_reward", "grpo.reward_funcs[0]", f -> null);
        assertEquals(doubles(root.get("think_format_reward")), think.function().score(batch(texts, List.of())));
        for (JsonNode c : root.get("soft_overlong")) {
            RewardFunctions.Named soft = RewardFunctions.of("get_soft_overlong_punishment(max_completion_len="
                    + c.get("max_completion_len").asInt() + ", soft_punish_cache=" + c.get("soft_punish_cache").asInt()
                    + ")", "grpo.reward_funcs[0]", f -> null);
            assertEquals(c.get("name").asText(), soft.name());
            assertEquals(doubles(c.get("rewards")), soft.function().score(batch(List.of(), ids)), c.toString());
        }
        for (JsonNode c : root.get("repetition")) {
            RewardFunctions.Named repetition = RewardFunctions.of("get_repetition_penalty_reward(ngram_size="
                    + c.get("ngram_size").asInt() + ", max_penalty=" + c.get("max_penalty").doubleValue() + ")",
                    "grpo.reward_funcs[0]", f -> null);
            assertEquals(c.get("name").asText(), repetition.name());
            List<Double> actual = repetition.function().score(batch(List.of(), ids));
            List<Double> expected = doubles(c.get("rewards"));
            for (int i = 0; i < expected.size(); i++) {
                assertEquals(expected.get(i), actual.get(i), 1e-12, c + " " + i);
            }
        }
    }

    private static RewardFunction.Batch batch(List<String> texts, List<long[]> ids) {
        return new RewardFunction.Batch(List.of(), texts, ids, List.of(), Map.of());
    }

    private static List<Double> doubles(JsonNode values) {
        List<Double> out = new ArrayList<>();
        values.forEach(v -> out.add(v.doubleValue()));
        return out;
    }

    @ParameterizedTest
    @ValueSource(strings = {"dapo_beta", "grpo"})
    void oneStepEqualsTrlGrpoTrainer(String name) throws IOException {
        JsonNode batchJson = JSON.readTree(golden("step/batch.json").toFile());
        JsonNode want = JSON.readTree(golden("step/expected.json").toFile()).get(name);
        int g = batchJson.get("num_generations").asInt();
        GrpoConfig grpo = config(g, batchJson.get("max_completion_length").asInt(),
                want.get("temperature").doubleValue(), want.get("beta").doubleValue(), 0.2, null, null,
                want.get("loss_type").asText(), "group", "sum_then_normalize", List.of(), false);
        StepBatch read = StepBatch.read(batchJson);
        int rows = read.completions().length;
        long[][] completions = read.completions();
        int tokenCount = read.tokens();
        TrainingBatch batch = read.batch();
        GroupAdvantages.Result advantages = GroupAdvantages.of(grpo, read.scores(), new double[] {1},
                List.of("step_reward"));
        for (int i = 0; i < rows; i++) {
            assertEquals(want.get("advantages").get(i).doubleValue(), advantages.advantages()[i], 1e-6, "advantage");
        }
        float[] tokenAdvantages = new float[tokenCount];
        boolean[] mask = new boolean[tokenCount];
        int[] rowOf = new int[tokenCount];
        int t = 0;
        for (int i = 0; i < rows; i++) {
            for (int k = 0; k < completions[i].length; k++, t++) {
                tokenAdvantages[t] = advantages.advantages()[i];
                mask[t] = true;
                rowOf[t] = i;
            }
        }
        try (NDManager manager = NDManager.newBaseManager()) {
            LoraModel lora = DpoGoldenTest.goldenModel(batchJson, manager);
            CausalLm model = lora.model();
            float[] reference = null;
            if (grpo.beta() != 0) {
                lora.setAdaptersEnabled(false);
                try (NDManager pass = manager.newSubManager()) {
                    CausalLmLoss.Forward forward = CausalLmLoss.forward(model, batch, pass, OptionalLong.empty());
                    reference = CausalLmLoss.targetLogProbs(model, forward.states(), batch, pass, null, false,
                            grpo.temperature()).toFloatArray();
                }
                lora.setAdaptersEnabled(true);
                JsonNode trlReference = want.get("ref_per_token_logps");
                int at = 0;
                for (int i = 0; i < rows; i++) {
                    for (int k = 0; k < completions[i].length; k++, at++) {
                        assertEquals(trlReference.get(i).get(k).doubleValue(), reference[at], 2e-5, "reference");
                    }
                }
            }
            GrpoLoss.Tokens tokens = new GrpoLoss.Tokens(null, reference, tokenAdvantages, mask, rowOf, rows);
            float[] weights = GrpoLoss.weights(grpo, tokens, 1, tokenCount);
            double coefficient = want.get("aux_coef").doubleValue();
            List<String> report = new ArrayList<>();
            try (NDManager step = manager.newSubManager();
                    GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                CausalLmLoss.Forward forward = CausalLmLoss.forward(model, batch, step, OptionalLong.empty());
                CausalLmLoss.TokenStatistics[] statistics = new CausalLmLoss.TokenStatistics[1];
                NDArray policy = CausalLmLoss.targetLogProbs(model, forward.states(), batch, step, statistics, false,
                        grpo.temperature());
                GrpoLoss.Objective objective = GrpoLoss.objective(grpo, policy, tokens, weights, step);
                NDArray loss = objective.value().add(Scalars.times(forward.loadBalancing(), coefficient));
                report.add(close(name + " loss", want.get("loss").doubleValue(), loss.getFloat(), RTOL));
                report.add(close(name + " aux_loss", want.get("metrics").get("aux_loss").doubleValue(),
                        forward.loadBalancing().getFloat(), RTOL));
                report.add(close(name + " entropy", want.get("metrics").get("entropy").doubleValue(),
                        GrpoLoss.maskedMean(statistics[0].entropies(), mask), RTOL));
                if (grpo.beta() != 0) {
                    report.add(close(name + " kl", want.get("metrics").get("kl").doubleValue(),
                            objective.metrics().get("kl"), RTOL));
                }
                collector.backward(loss);
            }
            try (SafetensorsReader grads = SafetensorsReader.open(golden("step").resolve(want.get("grads").asText()))) {
                report.add(DpoGoldenTest.compareGradients(name + " gradients", lora, grads));
            }
            report.forEach(System.out::println);
        }
    }

    /**
     * A step golden's batch.json (GRPO's, RLOO's): prompt + completion rows, each prompt num_generations times, the
     * rows' one reward function's scores (NaN for a None), the completions and their token count.
     */
    record StepBatch(TrainingBatch batch, long[][] completions, double[][] scores, int tokens) {
        static StepBatch read(JsonNode batchJson) {
            int g = batchJson.get("num_generations").asInt();
            int rows = batchJson.get("completions").size();
            long[][] sequences = new long[rows][];
            int[] promptLengths = new int[rows];
            double[][] scores = new double[rows][1];
            long[][] completions = new long[rows][];
            int tokens = 0;
            for (int i = 0; i < rows; i++) {
                long[] prompt = longs1(batchJson.get("prompts").get(i / g));
                completions[i] = longs1(batchJson.get("completions").get(i));
                sequences[i] = RewardScorer.concat(prompt, completions[i]);
                promptLengths[i] = prompt.length;
                JsonNode reward = batchJson.get("rewards").get(i);
                scores[i][0] = reward.isNull() ? Double.NaN : reward.doubleValue();
                tokens += completions[i].length;
            }
            return new StepBatch(PreferenceBatch.completionRows(sequences, promptLengths,
                    batchJson.get("pad_id").longValue()), completions, scores, tokens);
        }
    }

    private static float[] toArray(List<Float> values) {
        float[] out = new float[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = values.get(i);
        }
        return out;
    }

    private static List<String> keys(JsonNode object) {
        List<String> keys = new ArrayList<>();
        object.fieldNames().forEachRemaining(keys::add);
        return keys;
    }
}
