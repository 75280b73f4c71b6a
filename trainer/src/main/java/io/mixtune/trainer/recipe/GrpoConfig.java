package io.mixtune.trainer.recipe;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * GRPO (train.method grpo) as TRL 1.13's GRPOTrainer trains it, under TRL's GRPOConfig names and defaults: per prompt
 * num_generations completions sampled from the policy, scored by the reward functions, their advantages the rewards
 * minus the group's mean (scaled by the group's or the batch's standard deviation), and the clipped surrogate loss of
 * loss_type, with beta x TRL's k3 estimate of the KL to the reference (the adapter off) when beta > 0.
 *
 * @param numGenerations completions per prompt (G in the paper), >= 2
 * @param maxCompletionLength most tokens sampled per completion
 * @param temperature sampling temperature; the log-probs of the loss are the logits / temperature's, as TRL's
 * @param topK 0 keeps every token
 * @param minP null: off
 * @param epsilonHigh the upper clip range; null: epsilon (DAPO recommends 0.28; cispo's epsilon max)
 * @param delta INTELLECT-2's upper bound of the unclipped ratio; null: off
 * @param lossType grpo | bnpo | dr_grpo | dapo (TRL's default) | cispo | sapo
 * @param scaleRewards group | batch | none
 * @param multiObjectiveAggregation sum_then_normalize | normalize_then_sum (GDPO)
 * @param numIterations optimizer steps per generation batch (mu in the paper)
 * @param rewardFuncs built-in reward functions by TRL's name, or reward model folders (`mixtune reward`); Java
 *     reward functions are added through Training's API
 * @param rewardWeights one per reward function (the recipe's, then the Java ones); empty: 1 each
 * @param useBiasCorrectionKl the KL term times the importance ratio (TRL 1.13's default, DeepSeek-V3.2): its gradient
 *     is then the unbiased reverse-KL gradient, on-policy too (the ratio is 1 there, its gradient not 0)
 * @param importanceSamplingLevel token (TRL's default: one ratio per token) | sequence (GSPO: one ratio per completion,
 *     the exp of the mean of its tokens' log-ratios)
 */
public record GrpoConfig(int numGenerations, int maxCompletionLength, double temperature, double topP, int topK,
        Double minP, double repetitionPenalty, double beta, double epsilon, Double epsilonHigh, Double delta,
        String lossType, String scaleRewards, String multiObjectiveAggregation, int numIterations,
        List<String> rewardFuncs, List<Double> rewardWeights, boolean maskTruncatedCompletions,
        double sapoTemperatureNeg, double sapoTemperaturePos, boolean useBiasCorrectionKl,
        String importanceSamplingLevel) {

    public static final List<String> LOSS_TYPES = List.of("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo");

    private static final String VLLM = "mixtune samples with its own generator in the training process (no vLLM "
            + "server or colocated engine); drop the key";
    private static final String ONE_GENERATION_PER_STEP = "mixtune samples one generation batch per optimizer step "
            + "(TRL's default: steps_per_generation = gradient_accumulation_steps, generation_batch_size = "
            + "per_device_train_batch_size x gradient_accumulation_steps): set train.micro_batch_size and "
            + "train.gradient_accumulation";

    private static final String OWN_SAMPLER = "mixtune samples with its own generator, one prompt's group at a time "
            + "with its own KV cache (not transformers' generate): drop the key";
    private static final String REFERENCE_NOT_SYNCED = "the reference (the base with the adapter off, or "
            + "model.adapter frozen) is never synced, as sync_ref_model is refused: drop the key";
    private static final String NO_COMPLETION_TABLE = "mixtune logs the completions' metrics (completions/*, rewards), "
            + "no table of completions: drop the key";

    /** GRPOConfig keys mixtune does not take, by dotted key, with what to do instead. */
    static final Map<String, String> NOT_OFFERED = Map.ofEntries(
            Map.entry("grpo.use_vllm", VLLM), Map.entry("grpo.vllm_mode", VLLM),
            Map.entry("grpo.vllm_server_base_url", VLLM), Map.entry("grpo.vllm_server_host", VLLM),
            Map.entry("grpo.vllm_server_port", VLLM), Map.entry("grpo.vllm_gpu_memory_utilization", VLLM),
            Map.entry("grpo.vllm_tensor_parallel_size", VLLM), Map.entry("grpo.vllm_importance_sampling_correction",
                    VLLM + " (the sampler is the policy itself: there is no mismatch to correct)"),
            Map.entry("grpo.generation_batch_size", ONE_GENERATION_PER_STEP),
            Map.entry("grpo.steps_per_generation", ONE_GENERATION_PER_STEP),
            Map.entry("grpo.per_device_train_batch_size", "it is train.micro_batch_size (completions, not prompts)"),
            Map.entry("grpo.learning_rate", "it is train.lr (TRL's GRPO default is 1e-6)"),
            Map.entry("grpo.top_entropy_quantile", "every completion token is trained (TRL's default 1.0)"),
            Map.entry("grpo.entropy_coef", "no entropy bonus (TRL's default 0.0)"),
            Map.entry("grpo.use_adaptive_entropy", "no entropy bonus (TRL's default 0.0)"),
            Map.entry("grpo.off_policy_mask_threshold", "no off-policy sequence mask (TRL's default null)"),
            Map.entry("grpo.sync_ref_model", "the reference is the base with the adapter off, never synced (TRL "
                    + "refuses sync_ref_model with a PEFT model too)"),
            Map.entry("grpo.num_generations_eval", "GRPO runs no evaluation; data.validation_* are refused"),
            Map.entry("grpo.disable_dropout", "set lora.dropout: 0 (sampling, the old and the reference log-probs "
                    + "run without dropout in mixtune)"),
            Map.entry("grpo.remove_unused_columns", "every column of a record reaches the reward functions"),
            Map.entry("grpo.shuffle_dataset", "prompts are shuffled every epoch from train.data_seed / train.seed"),
            Map.entry("grpo.generation_kwargs", "set temperature, top_p, top_k, min_p and repetition_penalty here"),
            Map.entry("grpo.use_liger_kernel", "no Liger kernels in mixtune"),
            Map.entry("grpo.cast_lm_head_to_fp32", "the head computes in float32 whenever the logits feed a loss"),
            Map.entry("grpo.tools", "no tool calling during generation"),
            Map.entry("grpo.max_tool_calling_iterations", "no tool calling during generation"),
            // the rest of GRPOConfig's (and RLOOConfig's) keys, so that none is an unknown key
            Map.entry("grpo.vllm_enable_sleep_mode", VLLM), Map.entry("grpo.vllm_group_port", VLLM),
            Map.entry("grpo.vllm_max_model_length", VLLM), Map.entry("grpo.vllm_model_impl", VLLM),
            Map.entry("grpo.vllm_server_timeout", VLLM), Map.entry("grpo.vllm_structured_outputs_regex", VLLM),
            Map.entry("grpo.use_transformers_continuous_batching", OWN_SAMPLER),
            Map.entry("grpo.transformers_continuous_batching_config", OWN_SAMPLER),
            Map.entry("grpo.use_transformers_paged", OWN_SAMPLER), Map.entry("grpo.cache_implementation", OWN_SAMPLER),
            Map.entry("grpo.pad_to_multiple_of", "each row runs unpadded from position 0: drop the key"),
            Map.entry("grpo.ds3_gather_for_generation", "no DeepSpeed in mixtune: drop the key"),
            Map.entry("grpo.ref_model_mixup_alpha", REFERENCE_NOT_SYNCED),
            Map.entry("grpo.ref_model_sync_steps", REFERENCE_NOT_SYNCED),
            Map.entry("grpo.router_aux_loss_coef", "it is train.router_aux_loss_coef"),
            Map.entry("grpo.model_init_kwargs", "the model section says how the model loads (model.quantize ...)"),
            Map.entry("grpo.trust_remote_code", "mixtune runs its own Mistral/Mixtral code, never a model's: drop the "
                    + "key"),
            Map.entry("grpo.chat_template_kwargs", "conversational prompts go through data.template"),
            Map.entry("grpo.log_completions", NO_COMPLETION_TABLE),
            Map.entry("grpo.num_completions_to_print", NO_COMPLETION_TABLE),
            Map.entry("grpo.log_unique_prompts", NO_COMPLETION_TABLE),
            Map.entry("grpo.log_multimodal", NO_COMPLETION_TABLE));

    public GrpoConfig {
        rewardFuncs = rewardFuncs == null ? List.of() : List.copyOf(rewardFuncs);
        rewardWeights = rewardWeights == null ? List.of() : List.copyOf(rewardWeights);
        List<String> problems = new ArrayList<>();
        if (numGenerations < 2) {
            problems.add("num_generations: must be >= 2 (the advantages compare a prompt's completions), got "
                    + numGenerations);
        }
        if (maxCompletionLength < 1) {
            problems.add("max_completion_length: must be a positive integer, got " + maxCompletionLength);
        }
        if (!(temperature > 0) || Double.isInfinite(temperature)) {
            problems.add("temperature: must be a number > 0, got " + temperature);
        }
        if (!(topP > 0 && topP <= 1)) {
            problems.add("top_p: must lie in (0, 1], got " + topP);
        }
        if (topK < 0) {
            problems.add("top_k: must be >= 0 (0 keeps every token), got " + topK);
        }
        if (minP != null && !(minP >= 0 && minP <= 1)) {
            problems.add("min_p: must lie in [0, 1] or be null, got " + minP);
        }
        if (!(repetitionPenalty > 0) || Double.isInfinite(repetitionPenalty)) {
            problems.add("repetition_penalty: must be a number > 0 (1 is none), got " + repetitionPenalty);
        }
        if (!(beta >= 0) || Double.isInfinite(beta)) {
            problems.add("beta: must be a finite number >= 0 (0: no KL term and no reference pass), got " + beta);
        }
        if (!(epsilon >= 0 && epsilon < 1)) {
            problems.add("epsilon: must lie in [0, 1), got " + epsilon);
        }
        if (epsilonHigh != null && !(epsilonHigh >= 0) || epsilonHigh != null && Double.isInfinite(epsilonHigh)) {
            problems.add("epsilon_high: must be a finite number >= 0 or null (then epsilon), got " + epsilonHigh);
        }
        if (delta != null && !(delta > 1) || delta != null && Double.isInfinite(delta)) {
            problems.add("delta: must be a number > 1 (INTELLECT-2 recommends > 1 + epsilon) or null, got " + delta);
        }
        if (lossType == null || !LOSS_TYPES.contains(lossType)) {
            String why = "luspo".equals(lossType) || "vespo".equals(lossType)
                    ? " (" + lossType + " is not offered; importance_sampling_level: sequence with loss_type: grpo is "
                    + "GSPO)" : "";
            problems.add("loss_type: expected one of " + String.join(", ", LOSS_TYPES) + ", got " + lossType + why);
        }
        if (scaleRewards == null || !List.of("group", "batch", "none").contains(scaleRewards)) {
            problems.add("scale_rewards: expected group, batch or none (TRL's true is group, false none), got "
                    + scaleRewards);
        }
        if (multiObjectiveAggregation == null
                || !List.of("sum_then_normalize", "normalize_then_sum").contains(multiObjectiveAggregation)) {
            problems.add("multi_objective_aggregation: expected sum_then_normalize or normalize_then_sum, got "
                    + multiObjectiveAggregation);
        }
        if (numIterations < 1) {
            problems.add("num_iterations: must be a positive integer, got " + numIterations);
        }
        if (!(sapoTemperatureNeg > 0) || !(sapoTemperaturePos > 0)) {
            problems.add("sapo_temperature_neg: both sapo temperatures must be > 0, got " + sapoTemperatureNeg + " and "
                    + sapoTemperaturePos);
        }
        if (importanceSamplingLevel == null || !List.of("token", "sequence").contains(importanceSamplingLevel)) {
            problems.add("importance_sampling_level: expected token or sequence (GSPO), as TRL 1.13, got "
                    + importanceSamplingLevel);
        }
        if (!problems.isEmpty()) {
            IllegalArgumentException first = new IllegalArgumentException(problems.get(0));
            problems.subList(1, problems.size()).forEach(p -> first.addSuppressed(new IllegalArgumentException(p)));
            throw first;
        }
    }

    /** TRL's epsilon_low and epsilon_high. */
    public double epsilonLow() {
        return epsilon;
    }

    public double upperEpsilon() {
        return epsilonHigh != null ? epsilonHigh : epsilon;
    }

    /** GSPO: one importance ratio per completion (importance_sampling_level sequence). */
    public boolean sequenceLevel() {
        return "sequence".equals(importanceSamplingLevel);
    }
}
