package io.mixtune.trainer.recipe;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Knowledge distillation (train.method distillation) as TRL 1.13's DistillationTrainer trains it, by its
 * DistillationConfig's names and defaults: the student (the recipe's model and adapter) learns to match the teacher's
 * next-token distributions on completion tokens under the generalized Jensen-Shannon divergence of the GKD paper
 * (Agarwal et al. 2024), both sides' logits divided by the temperature; lmbda is GKD's share of on-policy micro-batches
 * (trl.experimental.gkd's GKDConfig.lmbda), whose completions the student samples itself. DistillationTrainer is lmbda
 * 1 (it always generates), hence the default.
 *
 * @param teacherModelNameOrPath the teacher's Hugging Face checkpoint directory (TRL's teacher_model_name_or_path; a
 *     local folder), or null with teacherPreset
 * @param teacherPreset instead, a preset of configs/models/ with random weights (tiny ones), written once to
 *     output_dir/teacher-model
 * @param teacherAdapter a PEFT adapter the teacher runs with (frozen), or null
 * @param teacherQuantize nf4 or none; null: as model.quantize
 * @param temperature divides both sides' logits in the loss, and the sampling temperature of on-policy completions
 * @param beta the divergence: 0 forward KL(teacher || student), 1 reverse KL(student || teacher), else the
 *     generalized JSD with mixture beta x teacher + (1 - beta) x student
 * @param lmbda the share of micro-batches whose completions the student generates (drawn per micro-batch from the
 *     step's seed); the others train on the data's completions
 * @param maxCompletionLength most tokens an on-policy completion gets
 * @param topP nucleus sampling of on-policy completions (1: off)
 * @param topK top-k sampling of on-policy completions (0: off)
 * @param minP min-p sampling of on-policy completions (null: off)
 * @param repetitionPenalty of on-policy sampling (1: none)
 */
public record Distillation(String teacherModelNameOrPath, String teacherPreset, String teacherAdapter,
        String teacherQuantize, double temperature, double beta, double lmbda, int maxCompletionLength, double topP,
        int topK, Double minP, double repetitionPenalty) {

    private static final String SAMPLER = "on-policy completions come from mixtune's own sampler (the student with its "
            + "KV cache, on the training device)";

    /** DistillationConfig's (and GKDConfig's) keys mixtune does not take, by their dotted key, and what to do. */
    static final Map<String, String> NOT_OFFERED = notOffered();

    private static Map<String, String> notOffered() {
        Map<String, String> keys = new java.util.LinkedHashMap<>();
        for (String vllm : List.of("use_vllm", "vllm_mode", "vllm_model_impl", "vllm_enable_sleep_mode",
                "vllm_structured_outputs_regex", "vllm_server_base_url", "vllm_server_host", "vllm_server_port",
                "vllm_server_timeout", "vllm_group_port", "vllm_gpu_memory_utilization", "vllm_max_model_length",
                "vllm_tensor_parallel_size")) {
            keys.put(vllm, "vLLM is not used: " + SAMPLER);
        }
        keys.put("model_init_kwargs", "the student loads as the model section says (model.quantize, compute_dtype)");
        keys.put("teacher_model_init_kwargs", "the teacher loads as distillation.teacher_quantize and "
                + "model.compute_dtype say");
        keys.put("teacher_model_revision", "the teacher is a local folder (teacher_model_name_or_path) or a preset "
                + "(teacher_preset): check out the revision you want into a folder");
        keys.put("trust_remote_code", "mixtune runs Mistral and Mixtral checkpoints with its own code, never a "
                + "model's Python");
        keys.put("ds3_gather_for_generation", "mixtune trains on one device (no DeepSpeed)");
        keys.put("generation_kwargs", "set distillation.top_p, top_k, min_p, repetition_penalty and "
                + "max_completion_length");
        keys.put("chat_template_kwargs", "on-policy prompts are the data's prompts as data.template renders them");
        keys.put("cache_implementation", SAMPLER);
        keys.put("max_tool_calling_iterations", "tool calling is not offered");
        keys.put("log_completions", "train.eval_prompts writes the student's answers to samples.jsonl at each "
                + "evaluation");
        keys.put("num_completions_to_print", "train.eval_prompts writes sample answers to samples.jsonl");
        keys.put("log_unique_prompts", "train.eval_prompts writes sample answers to samples.jsonl");
        keys.put("pad_to_multiple_of", "rows are padded to the longest of their micro-batch");
        keys.put("shuffle_dataset", "the training samples are always shuffled (TRL's default), seeded by "
                + "train.data_seed");
        keys.put("remove_unused_columns", "mixtune reads the fields of its data formats and ignores others");
        keys.put("disable_dropout", "set lora.dropout: 0 (TRL's default false keeps it, as mixtune does)");
        keys.put("seq_kd", "GKD's sequence-level KD on teacher-generated completions: "
                + "generate the teacher's answers into prompt_completion records and train on them (lmbda: 0)");
        keys.put("max_new_tokens", "GKD's max_new_tokens is distillation.max_completion_length "
                + "(DistillationConfig's name)");
        keys.put("teacher_model", "give the teacher as distillation.teacher_model_name_or_path (a folder) or "
                + "teacher_preset");
        Map<String, String> dotted = new java.util.LinkedHashMap<>();
        keys.forEach((key, why) -> dotted.put("distillation." + key, why));
        return Map.copyOf(dotted);
    }

    public Distillation {
        List<String> problems = new ArrayList<>();
        if (teacherModelNameOrPath != null && teacherPreset != null) {
            problems.add("teacher_model_name_or_path: give one of teacher_model_name_or_path (a checkpoint folder) "
                    + "and teacher_preset, not both");
        }
        if (teacherQuantize != null && !List.of("nf4", "none").contains(teacherQuantize)) {
            problems.add("teacher_quantize: expected one of nf4, none (or null: as model.quantize), got \""
                    + teacherQuantize + "\"");
        }
        if (!(temperature > 0 && Double.isFinite(temperature))) {
            problems.add("temperature: must be a finite number > 0, got " + temperature);
        }
        if (!(beta >= 0 && beta <= 1)) {
            // DistillationConfig.__post_init__ refuses it too
            problems.add("beta: must lie in [0, 1] (0 forward KL, 1 reverse KL, between: generalized JSD), got "
                    + beta);
        }
        if (!(lmbda >= 0 && lmbda <= 1)) {
            problems.add("lmbda: must lie in [0, 1] (the share of on-policy micro-batches), got " + lmbda);
        }
        if (maxCompletionLength <= 0) {
            problems.add("max_completion_length: must be a positive integer, got " + maxCompletionLength);
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
        if (!(repetitionPenalty > 0 && Double.isFinite(repetitionPenalty))) {
            problems.add("repetition_penalty: must be a finite number > 0 (1 is none), got " + repetitionPenalty);
        }
        if (!problems.isEmpty()) {
            IllegalArgumentException first = new IllegalArgumentException(problems.get(0));
            problems.subList(1, problems.size()).forEach(p -> first.addSuppressed(new IllegalArgumentException(p)));
            throw first;
        }
    }

    /** The teacher's quantization: teacher_quantize, else the student's. */
    public String teacherQuantizeOr(String studentQuantize) {
        return teacherQuantize != null ? teacherQuantize : studentQuantize;
    }
}
