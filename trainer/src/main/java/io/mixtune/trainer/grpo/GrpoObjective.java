package io.mixtune.trainer.grpo;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.model.generate.Generator;
import io.mixtune.model.generate.TokenSampler;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Scalars;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.dpo.PreferenceBatch;
import io.mixtune.trainer.recipe.GrpoConfig;
import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.DecoderBackward;
import io.mixtune.trainer.run.MicroBatchMeans;
import io.mixtune.trainer.run.Objective;
import io.mixtune.trainer.run.ShuffledEpochs;
import io.mixtune.trainer.run.StepContext;
import io.mixtune.trainer.run.TrainingBatch;
import io.mixtune.trainer.reward.RewardScorer;
import io.mixtune.trainer.run.TrainingModel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalLong;
import java.util.Random;
import java.util.Set;

/**
 * GRPO, and RLOO ({@link PolicyGradient}: their advantages and losses differ, nothing else), as an objective. A
 * step's micro-batches are the train.gradient_accumulation parts of one generation batch (TRL's default
 * steps_per_generation = gradient_accumulation_steps): micro_batch_size x gradient_accumulation completions,
 * num_generations per prompt, sampled once per num_iterations steps from the policy as it is then
 * ({@link #rollouts}); each micro-batch is then a forward and backward of {@link GrpoLoss} on its completions.
 */
final class GrpoObjective implements Objective<GrpoObjective.Part, GrpoObjective.Measured> {
    /** Where a step's micro-batch stands: its step's generation batch, and which part of it. */
    record Part(long generation, int part) {}

    private final GrpoConfig grpo;
    private final PolicyGradient method;
    private final TrainingModel model;
    private final PromptDataset data;
    private final List<RewardFunctions.Named> rewards;
    private final double[] weights;
    private final TextTokenizer tokenizer;
    private final Set<Integer> eosIds;
    private final long padId;
    private final int rowsPerMicroBatch;
    private final int accumulation;
    private final int promptsPerGeneration;
    private final long generationsPerEpoch;
    private final ShuffledEpochs promptOrder;
    private final long seed;
    /** The reference adapter's name, or null: the base with the adapter off. */
    private final String referenceAdapter;
    private Rollouts rollouts;

    GrpoObjective(GrpoSetup setup, Rollouts resumed) {
        this.grpo = setup.recipe().policyGradient();
        this.method = setup.method();
        this.model = setup.model();
        this.data = setup.data();
        this.rewards = setup.rewards();
        this.weights = setup.weights();
        this.tokenizer = setup.tokenizer();
        this.eosIds = Set.copyOf(setup.eosIds());
        this.padId = model.model().config().eosTokenId();
        this.rowsPerMicroBatch = setup.recipe().train().microBatchSize();
        this.accumulation = setup.recipe().train().gradientAccumulation();
        this.promptsPerGeneration = rowsPerMicroBatch * accumulation / grpo.numGenerations();
        // TRL's RepeatSampler drops an epoch's last, incomplete generation batch
        this.generationsPerEpoch = data.size() / promptsPerGeneration;
        this.seed = setup.recipe().train().shuffleSeed();
        this.promptOrder = new ShuffledEpochs(data.size(), promptsPerGeneration, seed);
        this.referenceAdapter = setup.referenceAdapter();
        this.rollouts = resumed;
    }

    /** Generation batches per epoch, each num_iterations steps. */
    static long generationsPerEpoch(int prompts, int completionsPerStep, int numGenerations) {
        return prompts / (completionsPerStep / numGenerations);
    }

    @Override
    public long microBatchesPerEpoch() {
        return generationsPerEpoch * grpo.numIterations() * accumulation;
    }

    @Override
    public Part microBatch(long index) {
        long step = index / accumulation;
        return new Part(step / grpo.numIterations(), (int) (index % accumulation));
    }

    @Override
    public Measured backward(List<Part> parts, StepContext context) {
        long generation = parts.get(0).generation();
        boolean generated = rollouts == null || rollouts.generation() != generation;
        if (generated) {
            rollouts = rollouts(generation);
        }
        MicroBatchMeans means = new MicroBatchMeans();
        double weight = context.scaler().scale();
        double loss = 0;
        for (Part part : parts) {
            Micro micro = micro(part.part());
            Map<String, Double> values = new LinkedHashMap<>();
            double[] objective = new double[1];
            double loadBalancing = DecoderBackward.run(context.model(), micro.rows(), (states, manager) -> {
                CausalLmLoss.TokenStatistics[] statistics = new CausalLmLoss.TokenStatistics[1];
                NDArray policy = CausalLmLoss.targetLogProbs(context.model(), states, micro.rows(), manager,
                        statistics, false, grpo.temperature());
                GrpoLoss.Objective terms = method.objective(policy, micro.tokens(), accumulation,
                        rollouts.countedTokens(), manager);
                objective[0] = terms.value().getFloat();
                values.putAll(terms.metrics());
                values.put("entropy", GrpoLoss.maskedMean(statistics[0].entropies(), micro.tokens().mask()));
                return Scalars.times(terms.value(), weight);
            }, context.auxCoefficient() * weight / accumulation, context.gradientCheckpointing(),
                    context.dropoutSeed() + part.part(), context.manager());
            Map<String, Double> ordered = new LinkedHashMap<>();
            if (!Double.isNaN(loadBalancing)) {
                ordered.put("aux_loss", loadBalancing);
                objective[0] += context.auxCoefficient() * loadBalancing / accumulation;
            }
            if (values.containsKey("kl")) {
                ordered.put("kl", values.remove("kl"));
            }
            ordered.put("entropy", values.remove("entropy"));
            ordered.putAll(values);
            means.add(ordered, objective[0], 1);
            loss += objective[0];
        }
        Map<String, Object> metrics = new LinkedHashMap<>();
        if (generated) {
            metrics.putAll(rollouts.metrics());
        }
        metrics.putAll(means.values());
        return new Measured(loss, generated ? rollouts.tokens() : 0, metrics);
    }

    /** What a step measured: the loss (the sum of its micro-batches' objectives, as TRL scales them), TRL's metrics. */
    record Measured(double loss, long tokens, Map<String, Object> metrics) implements Objective.Measured {
        @Override
        public String figures() {
            Object reward = metrics.get("reward");
            return reward == null ? "" : String.format(Locale.ROOT, "  reward %.4f", ((Number) reward).doubleValue());
        }
    }

    /** A micro-batch's rows (prompt + completion, right-padded) and its completion tokens' terms. */
    private record Micro(TrainingBatch rows, GrpoLoss.Tokens tokens) {}

    private Micro micro(int part) {
        int[] rows = new int[rowsPerMicroBatch];
        System.arraycopy(rollouts.order(), part * rowsPerMicroBatch, rows, 0, rowsPerMicroBatch);
        return micro(rollouts, rows);
    }

    private Micro micro(Rollouts r, int[] rows) {
        long[][] sequences = new long[rows.length][];
        int[] promptLengths = new int[rows.length];
        int tokens = 0;
        for (int i = 0; i < rows.length; i++) {
            long[] prompt = data.prompts().get(r.promptIndex()[rows[i]]).ids();
            long[] completion = r.completions()[rows[i]];
            sequences[i] = RewardScorer.concat(prompt, completion);
            promptLengths[i] = prompt.length;
            tokens += completion.length;
        }
        float[] old = r.old() == null ? null : new float[tokens];
        float[] reference = r.reference() == null ? null : new float[tokens];
        float[] advantages = new float[tokens];
        boolean[] mask = new boolean[tokens];
        int[] rowOf = new int[tokens];
        int t = 0;
        for (int i = 0; i < rows.length; i++) {
            int row = rows[i];
            for (int k = 0; k < r.completions()[row].length; k++, t++) {
                if (old != null) {
                    old[t] = r.old()[row][k];
                }
                if (reference != null) {
                    reference[t] = r.reference()[row][k];
                }
                advantages[t] = r.advantages()[row];
                mask[t] = r.counted()[row];
                rowOf[t] = i;
            }
        }
        return new Micro(PreferenceBatch.completionRows(sequences, promptLengths, padId),
                new GrpoLoss.Tokens(old, reference, advantages, mask, rowOf, rows.length));
    }

    /**
     * Samples generation batch {@code generation}: its prompts (the epoch's shuffled order), num_generations
     * completions each from the policy as it is, decoded together as one batch, without dropout (the sampler seeded per completion from the recipe's
     * seed, so a resumed run samples the same), their rewards and advantages, and the log-probs the loss holds fixed.
     */
    private Rollouts rollouts(long generation) {
        int g = grpo.numGenerations();
        long epoch = generation / generationsPerEpoch;
        int[] prompts = promptOrder.microBatch(epoch * promptOrder.microBatchesPerEpoch()
                + generation % generationsPerEpoch);
        int n = prompts.length * g;
        int[] promptIndex = new int[n];
        long[][] completions = new long[n][];
        TokenSampler.Settings settings = new TokenSampler.Settings(true, grpo.temperature(), grpo.topK(),
                grpo.topP(), grpo.minP() == null ? 0 : grpo.minP(), grpo.repetitionPenalty());
        Generator generator = new Generator(model.model(), eosIds);
        try (LoraModel.Scope evaluating = model.lora().evaluating()) {
            for (int p = 0; p < prompts.length; p++) {
                List<TokenSampler> samplers = new ArrayList<>();
                for (int k = 0; k < g; k++) {
                    samplers.add(new TokenSampler(settings, (seed * 1_000_003L + generation) * 65_537L + p * g + k));
                }
                List<List<Integer>> group = generator.generateGroup(data.prompts().get(prompts[p]).ids(),
                        grpo.maxCompletionLength(), samplers);
                for (int k = 0; k < g; k++) {
                    promptIndex[p * g + k] = prompts[p];
                    completions[p * g + k] = group.get(k).stream().mapToLong(Integer::longValue).toArray();
                }
            }
        }
        boolean[] truncated = new boolean[n];
        boolean[] counted = new boolean[n];
        long tokens = 0;
        long countedTokens = 0;
        for (int i = 0; i < n; i++) {
            long[] ids = completions[i];
            truncated[i] = ids.length == 0 || !eosIds.contains((int) ids[ids.length - 1]);
            counted[i] = !(grpo.maskTruncatedCompletions() && truncated[i]);
            tokens += data.prompts().get(promptIndex[i]).ids().length + ids.length;
            countedTokens += counted[i] ? ids.length : 0;
        }
        Map<String, Double> metrics = new LinkedHashMap<>(completionMetrics(completions, truncated));
        double[][] scores = scores(promptIndex, completions);
        List<Integer> shuffled = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            shuffled.add(i);
        }
        Collections.shuffle(shuffled, new Random(seed * 7919L + generation));
        int[] order = shuffled.stream().mapToInt(Integer::intValue).toArray();
        // the log-prob passes read the rows only: RLOO's advantages need them (its KL is in the reward)
        Rollouts partial = new Rollouts(generation, promptIndex, completions, counted, new float[n], order,
                null, null, metrics, tokens, countedTokens);
        float[][] old = grpo.numIterations() > 1 || method.advantagesReadOld() ? logProbs(partial, null) : null;
        float[][] reference = grpo.beta() != 0 ? logProbs(partial, referenceAdapter == null ? "" : referenceAdapter)
                : null;
        GroupAdvantages.Result advantages = method.advantages(scores, weights,
                rewards.stream().map(RewardFunctions.Named::name).toList(), old, reference, counted);
        metrics.putAll(advantages.metrics());
        return new Rollouts(generation, promptIndex, completions, counted, advantages.advantages(), order, old,
                reference, metrics, tokens, countedTokens);
    }

    /**
     * Every row's per-token log-probs (logits / temperature), without gradient or dropout, micro-batch by
     * micro-batch: of the policy (adapter null), of the base ("") or of a reference adapter.
     */
    private float[][] logProbs(Rollouts r, String adapter) {
        float[][] out = new float[r.completions().length][];
        LoraModel lora = model.lora();
        for (int part = 0; part < accumulation; part++) {
            int[] rows = new int[rowsPerMicroBatch];
            System.arraycopy(r.order(), part * rowsPerMicroBatch, rows, 0, rowsPerMicroBatch);
            Micro micro = micro(r, rows);
            float[] flat;
            try (LoraModel.Scope evaluating = lora.evaluating();
                    LoraModel.Scope scope = adapter == null ? lora.evaluating()
                            : adapter.isEmpty() ? lora.withAdaptersDisabled() : lora.withActive(adapter);
                    NDManager manager = model.manager().newSubManager()) {
                CausalLm causalLm = model.model();
                CausalLmLoss.Forward forward = CausalLmLoss.forward(causalLm, micro.rows(), manager,
                        OptionalLong.empty());
                flat = CausalLmLoss.targetLogProbs(causalLm, forward.states(), micro.rows(), manager, null, false,
                        grpo.temperature()).toFloatArray();
            }
            int t = 0;
            for (int row : rows) {
                out[row] = new float[r.completions()[row].length];
                System.arraycopy(flat, t, out[row], 0, out[row].length);
                t += out[row].length;
            }
        }
        return out;
    }

    /** [completion][function] scores, NaN for a None. */
    private double[][] scores(int[] promptIndex, long[][] completions) {
        int n = completions.length;
        List<JsonNode> prompts = new ArrayList<>();
        List<String> texts = new ArrayList<>();
        List<long[]> ids = new ArrayList<>();
        List<long[]> promptIds = new ArrayList<>();
        Map<String, List<JsonNode>> columns = new LinkedHashMap<>();
        for (int i = 0; i < n; i++) {
            PromptDataset.Prompt prompt = data.prompts().get(promptIndex[i]);
            prompts.add(prompt.prompt());
            texts.add(tokenizer.decode(withoutEos(completions[i])));
            ids.add(completions[i].clone());
            promptIds.add(prompt.ids().clone());
            prompt.columns().forEach((name, value) -> columns.computeIfAbsent(name, k -> new ArrayList<>()));
        }
        for (int i = 0; i < n; i++) {
            Map<String, JsonNode> own = data.prompts().get(promptIndex[i]).columns();
            columns.forEach((name, values) -> values.add(own.get(name)));
        }
        RewardFunction.Batch batch = new RewardFunction.Batch(List.copyOf(prompts), List.copyOf(texts),
                List.copyOf(ids), List.copyOf(promptIds), columns);
        double[][] scores = new double[n][rewards.size()];
        for (int f = 0; f < rewards.size(); f++) {
            RewardFunctions.Named reward = rewards.get(f);
            List<Double> values = reward.function().score(batch);
            if (values == null || values.size() != n) {
                throw new IllegalStateException("the reward function '" + reward.name() + "' returned "
                        + (values == null ? "null" : values.size() + " rewards") + ", but " + n + " were expected "
                        + "(one per prompt-completion pair)");
            }
            for (int i = 0; i < n; i++) {
                Double value = values.get(i);
                scores[i][f] = value == null ? Double.NaN : value;
            }
        }
        return scores;
    }

    /** The ids a completion's text is decoded from: its EOS left out (TRL's skip_special_tokens). */
    private long[] withoutEos(long[] ids) {
        boolean ends = ids.length > 0 && eosIds.contains((int) ids[ids.length - 1]);
        return ends ? Arrays.copyOf(ids, ids.length - 1) : ids;
    }

    /** TRL's completions/* metrics of a generation batch. */
    static Map<String, Double> completionMetrics(long[][] completions, boolean[] truncated) {
        Map<String, Double> metrics = new LinkedHashMap<>();
        double sum = 0;
        double min = Double.MAX_VALUE;
        double max = 0;
        double termSum = 0;
        double termMin = Double.MAX_VALUE;
        double termMax = 0;
        int terminated = 0;
        int clipped = 0;
        for (int i = 0; i < completions.length; i++) {
            int length = completions[i].length;
            sum += length;
            min = Math.min(min, length);
            max = Math.max(max, length);
            if (truncated[i]) {
                clipped++;
            } else {
                terminated++;
                termSum += length;
                termMin = Math.min(termMin, length);
                termMax = Math.max(termMax, length);
            }
        }
        metrics.put("completions/mean_length", sum / completions.length);
        metrics.put("completions/min_length", min);
        metrics.put("completions/max_length", max);
        metrics.put("completions/clipped_ratio", (double) clipped / completions.length);
        // TRL takes a single 0 where no completion terminated
        metrics.put("completions/mean_terminated_length", terminated == 0 ? 0 : termSum / terminated);
        metrics.put("completions/min_terminated_length", terminated == 0 ? 0 : termMin);
        metrics.put("completions/max_terminated_length", terminated == 0 ? 0 : termMax);
        return metrics;
    }

    @Override
    public boolean hasValidation() {
        return false;
    }

    @Override
    public Map<String, Number> evaluate() {
        return Map.of();
    }

    @Override
    public String describeEvaluation(Map<String, Number> metrics) {
        return "";
    }

    @Override
    public void saveState(Path checkpointDir) {
        if (grpo.numIterations() > 1 && rollouts != null) {
            rollouts.save(checkpointDir);
        }
    }
}
