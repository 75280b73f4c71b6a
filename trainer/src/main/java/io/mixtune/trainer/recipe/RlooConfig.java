package io.mixtune.trainer.recipe;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * RLOO (train.method rloo) as TRL 1.13's RLOOTrainer trains it, under TRL's RLOOConfig names and defaults (beta 0.05
 * and num_generations 2, where GRPOConfig has 0 and 8): per prompt num_generations completions sampled from the policy
 * and scored by the reward functions; each completion's reward, less beta x the summed log-ratio of the sampling
 * policy to the reference, minus the mean of its group's other rewards (the leave-one-out baseline) is its advantage,
 * and the loss is PPO's clipped objective on the completion's whole log-probability. The sampling, the reward functions
 * and the run are GRPO's ({@link #sampling}).
 *
 * @param numGenerations completions per prompt (k in the paper), >= 2
 * @param beta the KL coefficient; it goes into the reward, not the loss; 0: no reference pass
 * @param epsilonHigh the upper clip range; null: epsilon
 * @param normalizeAdvantages the advantages normalised over the generation batch (mean 0, standard deviation 1)
 * @param rewardClipRange [min, max] the summed rewards are clamped to before the KL term; null: none
 */
public record RlooConfig(int numGenerations, int maxCompletionLength, double temperature, double topP, int topK,
        Double minP, double repetitionPenalty, double beta, double epsilon, Double epsilonHigh, int numIterations,
        List<String> rewardFuncs, List<Double> rewardWeights, boolean normalizeAdvantages,
        List<Double> rewardClipRange, boolean maskTruncatedCompletions) {

    /** RLOOConfig keys mixtune does not take, by dotted key: GRPOConfig's that RLOOConfig shares, and GRPO's own. */
    static final Map<String, String> NOT_OFFERED = notOffered();

    private static Map<String, String> notOffered() {
        Map<String, String> out = new LinkedHashMap<>();
        GrpoConfig.NOT_OFFERED.forEach((key, why) -> out.put("rloo." + key.substring("grpo.".length()), why));
        // the two of GRPO's reasons that name GRPO; RLOOConfig.learning_rate defaults to 1e-6 too
        out.put("rloo.learning_rate", "it is train.lr (TRL's RLOO default is 1e-6)");
        out.put("rloo.num_generations_eval", "RLOO runs no evaluation; data.validation_* are refused");
        String grpoOnly = "RLOOConfig has no such key (it is GRPO's: train.method grpo)";
        for (String key : List.of("loss_type", "scale_rewards", "importance_sampling_level", "delta",
                "multi_objective_aggregation", "sapo_temperature_neg", "sapo_temperature_pos",
                "use_bias_correction_kl")) {
            out.put("rloo." + key, grpoOnly);
        }
        return Map.copyOf(out);
    }

    public RlooConfig {
        rewardFuncs = rewardFuncs == null ? List.of() : List.copyOf(rewardFuncs);
        rewardWeights = rewardWeights == null ? List.of() : List.copyOf(rewardWeights);
        // the binder reads null as an empty list: both are no clipping
        rewardClipRange = rewardClipRange == null || rewardClipRange.isEmpty() ? null : List.copyOf(rewardClipRange);
        List<String> problems = new ArrayList<>();
        if (rewardClipRange != null && (rewardClipRange.size() != 2
                || !(rewardClipRange.get(0) <= rewardClipRange.get(1)))) {
            problems.add("reward_clip_range: expected [min, max] with min <= max, or null, got " + rewardClipRange);
        }
        try {
            sampling(numGenerations, maxCompletionLength, temperature, topP, topK, minP, repetitionPenalty, beta,
                    epsilon, epsilonHigh, numIterations, rewardFuncs, rewardWeights, maskTruncatedCompletions);
        } catch (IllegalArgumentException e) {
            problems.add(e.getMessage());
            for (Throwable more : e.getSuppressed()) {
                problems.add(more.getMessage());
            }
        }
        if (!problems.isEmpty()) {
            IllegalArgumentException first = new IllegalArgumentException(problems.get(0));
            problems.subList(1, problems.size()).forEach(p -> first.addSuppressed(new IllegalArgumentException(p)));
            throw first;
        }
    }

    /**
     * The GRPO settings an RLOO run samples, scores and clips with (GRPOConfig's checks on the keys both share): the
     * rest at GRPO's defaults, which RLOO's advantages and loss do not read.
     */
    public GrpoConfig sampling() {
        return sampling(numGenerations, maxCompletionLength, temperature, topP, topK, minP, repetitionPenalty, beta,
                epsilon, epsilonHigh, numIterations, rewardFuncs, rewardWeights, maskTruncatedCompletions);
    }

    private static GrpoConfig sampling(int numGenerations, int maxCompletionLength, double temperature, double topP,
            int topK, Double minP, double repetitionPenalty, double beta, double epsilon, Double epsilonHigh,
            int numIterations, List<String> rewardFuncs, List<Double> rewardWeights, boolean maskTruncated) {
        return new GrpoConfig(numGenerations, maxCompletionLength, temperature, topP, topK, minP, repetitionPenalty,
                beta, epsilon, epsilonHigh, null, "grpo", "none", "sum_then_normalize", numIterations, rewardFuncs,
                rewardWeights, maskTruncated, 1.05, 1.0, false, "token");
    }
}
