package io.mixtune.trainer.recipe;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.data.template.JinjaChatTemplate;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.LoraInit;
import io.mixtune.trainer.optim.LearningRateSchedule;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * An axolotl config (github.com/axolotl-ai-cloud/axolotl, docs/config-reference.qmd) turned into a mixtune recipe: each
 * key mixtune has an equivalent for is written under its recipe key with the axolotl key beside it as a comment; every
 * other key is listed as not mapped, with its line and why. Keys without a value (axolotl's {@code wandb_project:})
 * set nothing and are skipped. Where the config leaves a key unset and axolotl's default differs from mixtune's
 * (sequence_len, sample_packing, lora_dropout, save_total_limit, the Mixtral router loss), axolotl's default is
 * written, so that the recipe trains as axolotl would.
 */
public final class AxolotlImport {
    /** The recipe's sections in the order recipes are written. */
    private static final List<String> SECTIONS = List.of("model", "lora", "data", "train", "dpo", "kto", "orpo", "cpo", "grpo",
            "logging");

    /**
     * What axolotl's lora_target_linear means: every linear layer but the output embedding (find_all_linear_names), so
     * for a Mixtral in the per-expert layout the router {@code gate} too, which mixtune's all-linear leaves out.
     */
    static final List<String> EVERY_LINEAR_BUT_LM_HEAD = LoraConfig.MODULE_NAMES.stream()
            .filter(name -> !name.equals("lm_head")).sorted().toList();

    /**
     * Keys that only say how axolotl runs (logging, hub uploads, kernels): nothing in a mixtune recipe changes with
     * them, so they are listed apart from the settings mixtune lacks.
     */
    private static final Set<String> RUNTIME_ONLY = Set.of("wandb_project", "wandb_entity", "wandb_watch", "wandb_name",
            "wandb_log_model", "hub_model_id", "logging_steps", "attn_implementation", "flash_attention",
            "dataset_prepared_path", "strict", "tf32", "xformers_attention", "sdp_attention", "resume_from_checkpoint",
            "lora_model_dir");

    /**
     * axolotl's KD plugin distills from a teacher's top-k log-probs, stored in the data or served by vLLM or sglang,
     * mixed with cross-entropy and scaled by temperature^2: another loss, and no teacher model to name.
     */
    private static final String AXOLOTL_KD = "axolotl's KD plugin distills from top-k teacher log-probs stored in the "
            + "data or served by vLLM/sglang (kd_ce_alpha mixes in cross-entropy); mixtune distills from a local "
            + "teacher's full distribution: set train.method: distillation, distillation.teacher_model_name_or_path, "
            + "and distillation.beta and temperature (kd_beta and kd_temperature mean the same there)";

    /** Why some common axolotl keys have no recipe setting, where it is not plain that mixtune lacks the feature. */
    private static final Map<String, String> WHY_NOT = Map.ofEntries(
            Map.entry("model_type", "mixtune reads the architecture from the model's config.json"),
            Map.entry("tokenizer_type", "mixtune reads the model's own tokenizer.json"),
            Map.entry("trust_remote_code", "mixtune runs no model code from the Hub"),
            Map.entry("bnb_config_kwargs", "mixtune's 4 bits are bitsandbytes' nf4 with double quantization"
                    + " (blocksize 64), axolotl's defaults, and have no other setting"),
            Map.entry("bf16", "mixtune computes in model.compute_dtype: auto (fp16 on a GPU, fp32 on CPU), fp32 or"
                    + " fp16; no bf16"),
            Map.entry("fp16", "set model.compute_dtype: fp16 (auto picks it on a GPU)"),
            Map.entry("evals_per_epoch", "mixtune counts in steps: train.eval_every"),
            Map.entry("saves_per_epoch", "mixtune counts in steps: train.save_every"),
            Map.entry("deepspeed", "mixtune trains on one device"),
            Map.entry("fsdp", "mixtune trains on one device"),
            Map.entry("special_tokens", "changes the tokenizer's special tokens; mixtune trains with the model's"
                    + " tokenizer.json and its BOS/EOS as they are"),
            Map.entry("tokens", "adds tokens to the tokenizer; mixtune keeps the model's vocabulary"),
            Map.entry("chat_template_jinja", "a Jinja chat template of the config's own: put it in the model's"
                    + " tokenizer_config.json and use chat_template: tokenizer_default (data.template: hf)"),
            Map.entry("kd_trainer", AXOLOTL_KD), Map.entry("kd_alpha", AXOLOTL_KD),
            Map.entry("kd_ce_alpha", AXOLOTL_KD), Map.entry("kd_temperature", AXOLOTL_KD),
            Map.entry("kd_temperature_min", AXOLOTL_KD), Map.entry("kd_beta", AXOLOTL_KD),
            Map.entry("kd_normalize_topk", AXOLOTL_KD), Map.entry("kd_online_server_base_url", AXOLOTL_KD),
            Map.entry("kd_online_server", AXOLOTL_KD), Map.entry("kd_online_topk", AXOLOTL_KD));

    /** chat_template's choice of the tokenizer's template, else the named one (utils/chat_templates/base.py). */
    private static final String TOKENIZER_DEFAULT_FALLBACK = "tokenizer_default_fallback_";

    /**
     * Optimizer names (transformers' OptimizerNames) that compute torch.optim.AdamW's update: mixtune's AdamW. Paging
     * (paged_adamw_32bit) only lets bitsandbytes move the fp32 moments out of GPU memory under pressure.
     */
    static final Set<String> ADAMW_OPTIMIZERS = Set.of("adamw_torch", "adamw_torch_fused", "paged_adamw_32bit");

    /** bitsandbytes' 8-bit AdamW by transformers' names: train.optimizer of the same name (AdamW8bit). */
    static final Set<String> BNB_8BIT_ADAMW_OPTIMIZERS = Set.of("adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit");

    /** torchao's low-bit AdamW: other states and update, which mixtune does not have. */
    static final Set<String> LOW_BIT_ADAMW_OPTIMIZERS = Set.of("adamw_torch_8bit", "adamw_torch_4bit");

    /**
     * The lr_scheduler_kwargs each transformers schedule takes (optimization.py); get_scheduler hands any other to the
     * schedule's function, which stops with a TypeError.
     */
    private static final Map<String, List<String>> SCHEDULER_KWARGS = Map.of(
            "linear", List.of(),
            "cosine", List.of("num_cycles"),
            "cosine_with_min_lr", List.of("num_cycles", "min_lr", "min_lr_rate"),
            "cosine_with_restarts", List.of("num_cycles"),
            "polynomial", List.of("lr_end", "power"),
            "inverse_sqrt", List.of("timescale"),
            "cosine_warmup_with_min_lr", List.of("num_cycles", "min_lr", "min_lr_rate", "warmup_lr_rate"),
            "warmup_stable_decay", List.of("num_decay_steps", "num_stable_steps", "warmup_type", "decay_type",
                    "min_lr_ratio", "num_cycles"));

    /** Why an lr_scheduler has no mixtune schedule, before the list of those it has. */
    private static final Map<String, String> SCHEDULERS_NOT_MAPPED = Map.of(
            "one_cycle", "axolotl's own torch OneCycleLR; ",
            "rex", "axolotl's own RexLR; ",
            "reduce_lr_on_plateau", "moves the rate on evaluation metrics, and mixtune's rate is a function of the step"
                    + " alone (what a resumed run recomputes); ",
            "greedy", "moves the rate on evaluation metrics, and mixtune's rate is a function of the step alone (what a"
                    + " resumed run recomputes); ");

    private AxolotlImport() {}

    /**
     * @param recipe the recipe as YAML text, with comments naming the axolotl keys
     * @param values each mapped recipe key (dotted) with its value, for checks
     * @param unmapped each axolotl key mixtune did not map: "file:line: key: value: why"
     * @param notes where the recipe trains otherwise than axolotl would on the same data (also in the recipe)
     */
    public record Result(String recipe, Map<String, Object> values, List<String> unmapped, List<String> notes) {}

    public static Result read(Path file) {
        YamlTree tree;
        tree = YamlTree.parse(file);
        return new Mapping(file, tree).map();
    }

    private static final class Mapping {
        private final Path file;
        private final YamlTree tree;
        private final Map<String, Object> values = new LinkedHashMap<>();
        private final Map<String, String> comments = new LinkedHashMap<>();
        private final List<String> unmapped = new ArrayList<>();
        private final List<String> notes = new ArrayList<>();
        private final Set<String> used = new LinkedHashSet<>();

        Mapping(Path file, YamlTree tree) {
            this.file = file;
            this.tree = tree;
        }

        private JsonNode get(String key) {
            JsonNode value = tree.root.get(key);
            return value == null || value.isNull() ? null : value;
        }

        private void put(String recipeKey, Object value, String axolotlKey) {
            values.put(recipeKey, value);
            comments.put(recipeKey, "axolotl: " + axolotlKey);
            used.add(axolotlKey.replaceFirst("^([a-z0-9_]+).*$", "$1"));
        }

        private void unmapped(String key, String why) {
            used.add(key);
            JsonNode value = tree.root.get(key);
            unmapped.add(tree.originOf(key) + ": " + key + (value == null ? "" : ": " + value) + ": " + why);
        }

        Result map() {
            String method = mapTrainingMethod();
            mapModel();
            mapLora();
            mapData(method);
            mapTrain(method);
            for (Map.Entry<String, JsonNode> entry : tree.root.properties()) {
                String key = entry.getKey();
                if (used.contains(key) || entry.getValue().isNull()) {
                    continue;
                }
                if (isFalse(entry.getValue())) {
                    used.add(key); // an axolotl feature switched off: mixtune does not have it on either
                } else if (RUNTIME_ONLY.contains(key)) {
                    unmapped(key, "how axolotl runs (logging, hub, kernels, caching): no recipe setting");
                } else {
                    unmapped(key, WHY_NOT.getOrDefault(key, "no mixtune equivalent"));
                }
            }
            return new Result(render(), values, List.copyOf(unmapped), List.copyOf(notes));
        }

        private String mapTrainingMethod() {
            JsonNode rl = get("rl");
            if (rl == null) {
                return "sft";
            }
            if (rl.asText().equals("dpo") || rl.asText().equals("ipo")) {
                put("train.method", "dpo", "rl: " + rl.asText());
                // axolotl's RL trainer builder takes trl.beta first, then rl_beta; dpo_beta is rl_beta's deprecated
                // name, copied only where rl_beta is unset
                if (mapTrlBeta()) {
                    for (String key : List.of("rl_beta", "dpo_beta")) {
                        if (get(key) != null) {
                            unmapped(key, "axolotl uses trl.beta, which is set");
                        }
                    }
                } else if (get("rl_beta") != null) {
                    number("rl_beta", "dpo.beta", false);
                    if (get("dpo_beta") != null) {
                        unmapped("dpo_beta", "deprecated: axolotl uses rl_beta, which is set");
                    }
                } else {
                    number("dpo_beta", "dpo.beta", false);
                }
                if (rl.asText().equals("ipo")) {
                    put("dpo.loss", "ipo", "rl: ipo (axolotl sets TRL's loss_type [ipo])");
                    for (String key : List.of("dpo_loss_type", "dpo_loss_weights", "dpo_label_smoothing")) {
                        if (get(key) != null) {
                            unmapped(key, "axolotl hands it to TRL for rl: dpo only; rl: ipo is loss_type [ipo]");
                        }
                    }
                } else {
                    mapDpoLosses();
                }
                if (get("rpo_alpha") != null) {
                    unmapped("rpo_alpha", "axolotl refuses it (gone from TRL >= 0.29); TRL's sft loss type, "
                            + "dpo_loss_type [sigmoid, sft] with dpo_loss_weights [1, alpha], is dpo.sft_weight");
                }
                if (isTrue(get("dpo_use_weighting"))) {
                    mapUseWeighting();
                }
                return "dpo";
            }
            if (rl.asText().equals("kto")) {
                put("train.method", "kto", "rl: kto");
                // as for dpo: axolotl's RL trainer builder takes trl.beta first, then rl_beta
                if (mapTrlBeta("kto.beta")) {
                    if (get("rl_beta") != null) {
                        unmapped("rl_beta", "axolotl uses trl.beta, which is set");
                    }
                } else {
                    number("rl_beta", "kto.beta", false);
                }
                number("kto_desirable_weight", "kto.desirable_weight", false);
                number("kto_undesirable_weight", "kto.undesirable_weight", false);
                return "kto";
            }
            if (rl.asText().equals("grpo")) {
                put("train.method", "grpo", "rl: grpo");
                mapGrpo();
                return "grpo";
            }
            if (rl.asText().equals("orpo") || rl.asText().equals("simpo")) {
                return mapReferenceFree(rl.asText());
            }
            unmapped("rl", rl.asText().equals("cpo") ? "axolotl has no rl: cpo (its CPOTrainer runs for rl: simpo, "
                    + "with loss_type simpo): for CPO set train.method: cpo and cpo.loss in the recipe"
                    : "mixtune trains sft, dpo, kto, orpo, simpo (cpo) or grpo only");
            return "sft";
        }

        /**
         * rl: orpo (TRL's ORPOTrainer) and rl: simpo (TRL's CPOTrainer with loss_type simpo), as axolotl's RL trainer
         * builder (core/builders/rl.py) sets them: beta from trl.beta, else rl_beta (or the deprecated dpo_beta),
         * else orpo_alpha (for both); for simpo its simpo_gamma and, where set, cpo_alpha (unset: TRL's 1.0, mixtune's
         * default too).
         */
        private String mapReferenceFree(String rl) {
            String method = rl.equals("orpo") ? "orpo" : "cpo";
            put("train.method", method, "rl: " + rl);
            // axolotl's check_rl_beta copies the deprecated dpo_beta into rl_beta where unset, whatever rl is
            String rlBeta = get("rl_beta") != null ? "rl_beta" : get("dpo_beta") != null ? "dpo_beta" : null;
            if (mapTrlBeta(method + ".beta")) {
                for (String key : List.of("rl_beta", "dpo_beta", "orpo_alpha")) {
                    if (get(key) != null) {
                        unmapped(key, "axolotl uses trl.beta, which is set");
                    }
                }
            } else if (rlBeta != null) {
                number(rlBeta, method + ".beta", false);
                if (rlBeta.equals("rl_beta") && get("dpo_beta") != null) {
                    unmapped("dpo_beta", "deprecated: axolotl uses rl_beta, which is set");
                }
                if (get("orpo_alpha") != null) {
                    unmapped("orpo_alpha", "axolotl uses rl_beta, which is set");
                }
            } else {
                number("orpo_alpha", method + ".beta", false);
            }
            if (method.equals("cpo")) {
                put("cpo.loss", "simpo", "rl: simpo (axolotl sets CPOTrainer's loss_type simpo)");
                number("simpo_gamma", "cpo.simpo_gamma", false);
                number("cpo_alpha", "cpo.cpo_alpha", false);
                if (get("simpo_gamma") == null) {
                    notes.add("rl: simpo without simpo_gamma: axolotl hands TRL None, which its SimPO loss cannot "
                            + "divide; the recipe takes TRL's default cpo.simpo_gamma 0.5");
                }
            } else {
                for (String key : List.of("simpo_gamma", "cpo_alpha")) {
                    if (get(key) != null) {
                        unmapped(key, "axolotl reads it for rl: simpo only");
                    }
                }
            }
            return method;
        }

        /** TRL's GRPOConfig keys axolotl takes under trl, by the same names (grpo_config.py) in the grpo section. */
        private static final List<String> GRPO_NUMBERS = List.of("beta", "max_completion_length", "num_generations",
                "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "num_iterations", "epsilon",
                "epsilon_high");
        private static final Set<String> GRPO_INTEGERS = Set.of("max_completion_length", "num_generations", "top_k",
                "num_iterations");

        /**
         * rl: grpo's trl section: GRPOConfig's numbers, loss_type, importance_sampling_level, scale_rewards
         * (axolotl's boolean: true is TRL's group, false none), reward_weights, mask_truncated_completions and reward_funcs where they name TRL's own
         * think_format_reward; Python reward functions, vLLM and the rest are listed with what to do.
         */
        private void mapGrpo() {
            JsonNode trl = get("trl");
            if (trl == null) {
                return;
            }
            List<String> others = new ArrayList<>();
            trl.properties().forEach(e -> {
                String key = e.getKey();
                JsonNode value = e.getValue();
                if (value.isNull()) {
                    return;
                }
                Double number = value.isNumber() ? Double.valueOf(value.asDouble()) : parse(value.asText());
                if (GRPO_NUMBERS.contains(key) && number != null) {
                    put("grpo." + key, GRPO_INTEGERS.contains(key) ? (Object) number.intValue() : number, "trl." + key);
                } else if (key.equals("loss_type") || key.equals("importance_sampling_level")) {
                    put("grpo." + key, value.asText(), "trl." + key);
                } else if (key.equals("scale_rewards")) {
                    put("grpo.scale_rewards", value.isBoolean() ? (value.asBoolean() ? "group" : "none")
                            : value.asText(), "trl.scale_rewards");
                } else if (key.equals("mask_truncated_completions") && value.isBoolean()) {
                    put("grpo.mask_truncated_completions", value.asBoolean(), "trl.mask_truncated_completions");
                } else if (key.equals("reward_weights") && value.isArray()) {
                    List<Double> weights = new ArrayList<>();
                    value.forEach(w -> weights.add(w.asDouble()));
                    put("grpo.reward_weights", weights, "trl.reward_weights");
                } else if (key.equals("reward_funcs") && value.isArray()) {
                    List<String> builtIn = new ArrayList<>();
                    List<String> python = new ArrayList<>();
                    value.forEach(f -> (f.asText().endsWith("think_format_reward") ? builtIn : python).add(
                            f.asText()));
                    if (!builtIn.isEmpty()) {
                        put("grpo.reward_funcs", List.of("think_format_reward"), "trl.reward_funcs");
                    }
                    if (!python.isEmpty()) {
                        others.add("trl.reward_funcs " + python + " (Python functions: write them in Java and add "
                                + "them with Training.rewardFunction, or train a reward model with mixtune reward and "
                                + "name its folder in grpo.reward_funcs)");
                    }
                } else if (!(value.isBoolean() && !value.asBoolean())) {
                    others.add("trl." + key + (key.startsWith("vllm") || key.equals("use_vllm")
                            ? " (mixtune samples with its own generator, no vLLM)" : ""));
                }
            });
            used.add("trl");
            if (!others.isEmpty()) {
                unmapped("trl", String.join(", ", others) + ": not mapped");
            }
        }

        /** dpo_use_weighting to TRL's use_weighting (WPO), unless TRL refuses it with the losses mapped. */
        private void mapUseWeighting() {
            Object loss = values.get("dpo.loss");
            List<String> losses = loss instanceof List<?> list ? list.stream().map(String::valueOf).toList()
                    : loss == null ? List.of() : List.of(loss.toString());
            List<String> sorted = losses.stream().filter(l -> l.equals("aot") || l.equals("aot_unpaired")).toList();
            if (!sorted.isEmpty()) {
                unmapped("dpo_use_weighting", "TRL refuses it with " + String.join(", ", sorted) + ", which sorts the"
                        + " pairs' log-ratios apart");
            } else if (values.containsKey("dpo.sft_weight")) {
                unmapped("dpo_use_weighting", "TRL's sft loss type fails with it (its per-pair product)");
            } else {
                put("dpo.use_weighting", true, "dpo_use_weighting");
            }
        }

        /**
         * trl.beta to dpo.beta, where set; the trl section's other keys (TRL settings axolotl passes to its other
         * trainers: GRPO's vLLM, generation, rewards) are listed.
         *
         * @return whether trl.beta was set
         */
        private boolean mapTrlBeta() {
            return mapTrlBeta("dpo.beta");
        }

        private boolean mapTrlBeta(String recipeKey) {
            JsonNode trl = get("trl");
            JsonNode beta = trl == null ? null : trl.get("beta");
            if (beta == null || beta.isNull()) {
                return false;
            }
            Double number = beta.isNumber() ? Double.valueOf(beta.asDouble()) : parse(beta.asText());
            if (number == null) {
                unmapped("trl", "trl.beta: expected a number");
                return true;
            }
            put(recipeKey, number, "trl.beta (axolotl reads it before rl_beta)");
            List<String> others = new ArrayList<>();
            trl.properties().forEach(e -> {
                if (!e.getKey().equals("beta") && !e.getValue().isNull()) {
                    others.add("trl." + e.getKey());
                }
            });
            if (!others.isEmpty()) {
                unmapped("trl", String.join(", ", others) + ": TRL settings of axolotl's other RL trainers "
                        + "(GRPO's generation, vLLM, rewards), no mixtune equivalent");
            }
            return true;
        }

        /**
         * rl: dpo's losses: dpo_loss_type and dpo_loss_weights go to TRL's loss_type and loss_weights (axolotl's
         * DPOStrategy), TRL's sft among them being dpo.sft_weight; dpo_label_smoothing to label_smoothing, which TRL's
         * default sigmoid ignores.
         */
        private void mapDpoLosses() {
            List<String> types = elements(get("dpo_loss_type")).stream().map(JsonNode::asText).toList();
            List<Double> weights = elements(get("dpo_loss_weights")).stream()
                    .map(w -> w.isNumber() ? Double.valueOf(w.asDouble()) : parse(w.asText())).toList();
            String why = lossesNotMapped(types, weights);
            if (why != null) {
                unmapped(get("dpo_loss_type") != null ? "dpo_loss_type" : "dpo_loss_weights", why);
                if (get("dpo_loss_type") != null && get("dpo_loss_weights") != null) {
                    unmapped("dpo_loss_weights", "weighs dpo_loss_type's losses, which are not mapped");
                }
            } else if (!types.isEmpty() || !weights.isEmpty()) {
                List<String> losses = new ArrayList<>();
                List<Double> lossWeights = new ArrayList<>();
                double sftWeight = 0;
                for (int i = 0; i < Math.max(1, types.size()); i++) {
                    String type = types.isEmpty() ? "sigmoid" : types.get(i); // TRL's default loss_type
                    double weight = weights.isEmpty() ? 1 : weights.get(i);
                    if (type.equals("sft")) {
                        sftWeight += weight;
                    } else {
                        losses.add(type);
                        lossWeights.add(weight);
                    }
                }
                String from = types.isEmpty() ? "dpo_loss_weights"
                        : weights.isEmpty() ? "dpo_loss_type" : "dpo_loss_type, dpo_loss_weights";
                put("dpo.loss", losses.size() == 1 ? losses.get(0) : losses, from);
                if (lossWeights.stream().anyMatch(w -> w != 1)) {
                    put("dpo.loss_weights", lossWeights, from);
                }
                if (sftWeight != 0) {
                    put("dpo.sft_weight", sftWeight, from + " (TRL's sft loss type and its weight)");
                }
                used.add("dpo_loss_type");
                used.add("dpo_loss_weights");
            }
            if (get("dpo_label_smoothing") == null) {
                return;
            }
            if (why == null && types.stream().map(DpoLossType::of)
                    .anyMatch(t -> t != null && t.readsLabelSmoothing())) {
                number("dpo_label_smoothing", "dpo.label_smoothing", false);
            } else {
                unmapped("dpo_label_smoothing", "axolotl hands it to TRL's DPOConfig, whose "
                        + (types.isEmpty() ? "default sigmoid" : String.join(", ", types)) + " loss ignores it (TRL"
                        + " 1.13); mixtune's dpo.label_smoothing is for dpo.loss robust, exo_pair, aot, aot_unpaired");
            }
        }

        /** Why dpo_loss_type / dpo_loss_weights have no recipe equivalent, or null. */
        private static String lossesNotMapped(List<String> types, List<Double> weights) {
            List<String> unknown = types.stream().filter(t -> !t.equals("sft") && DpoLossType.of(t) == null).toList();
            if (!unknown.isEmpty()) {
                return "not TRL 1.13's: " + unknown + " (TRL's are " + String.join(", ", DpoLossType.trlNames())
                        + ", sft)";
            }
            if (weights.contains(null) || (!weights.isEmpty() && weights.size() != Math.max(1, types.size()))) {
                return "expected one number per loss of dpo_loss_type, as TRL does";
            }
            if (!types.isEmpty() && types.stream().allMatch("sft"::equals)) {
                return "sft alone is supervised fine-tuning on the chosen answers: a dpo recipe needs a preference"
                        + " loss beside it";
            }
            return null;
        }

        /** A list's elements, a single value as a list of one, nothing as none. */
        private static List<JsonNode> elements(JsonNode node) {
            List<JsonNode> out = new ArrayList<>();
            if (node != null) {
                (node.isArray() ? node : List.of(node)).forEach(out::add);
            }
            return out;
        }

        /** axolotl's optimizer, transformers' name for it: AdamW's equivalents are mixtune's; others are listed. */
        private void mapOptimizer() {
            JsonNode optimizer = get("optimizer");
            if (optimizer == null || ADAMW_OPTIMIZERS.contains(optimizer.asText())) {
                used.add("optimizer"); // unset: axolotl's default adamw_torch_fused
            } else if (BNB_8BIT_ADAMW_OPTIMIZERS.contains(optimizer.asText())) {
                put("train.optimizer", optimizer.asText(), "optimizer");
            } else if (LOW_BIT_ADAMW_OPTIMIZERS.contains(optimizer.asText())) {
                unmapped("optimizer", "torchao's AdamW with its moments in "
                        + (optimizer.asText().endsWith("4bit") ? "4" : "8") + " bits is not offered: train.optimizer:"
                        + " adamw_bnb_8bit (bitsandbytes' 8-bit moments) or adamw_torch (fp32); the recipe trains as"
                        + " adamw_torch would");
            } else {
                unmapped("optimizer", "mixtune trains with AdamW only, as adamw_torch or adamw_bnb_8bit"
                        + " (train.optimizer, adam_beta1, adam_beta2, adam_eps, weight_decay)");
            }
        }

        private void mapModel() {
            JsonNode base = get("base_model");
            if (base != null) {
                put("model.path", base.asText(), "base_model (a Hub id must be downloaded first: give the directory)");
            }
            JsonNode adapter = get("adapter");
            boolean fourBit = isTrue(get("load_in_4bit"));
            if (isTrue(get("load_in_8bit"))) {
                unmapped("load_in_8bit", "mixtune quantizes to 4 bits (NF4) or not at all");
            } else {
                used.add("load_in_8bit");
            }
            if (adapter == null) {
                unmapped("adapter", "absent: axolotl then fine-tunes every weight; mixtune trains LoRA adapters");
            } else if (adapter.asText().equals("qlora") || adapter.asText().equals("lora")) {
                boolean quantized = adapter.asText().equals("qlora") || fourBit;
                // mixtune's NF4 takes a Mixtral's experts too, as quantize_moe_experts: true asks of axolotl
                boolean moeExperts = quantized && isTrue(get("quantize_moe_experts"));
                put("model.quantize", quantized ? "nf4" : "none", "adapter: " + adapter.asText()
                        + (fourBit ? ", load_in_4bit: true" : "") + (moeExperts ? ", quantize_moe_experts: true" : ""));
                used.add("load_in_4bit");
                if (moeExperts) {
                    used.add("quantize_moe_experts");
                }
            } else {
                unmapped("adapter", "mixtune trains lora and qlora adapters");
            }
        }

        private void mapLora() {
            number("lora_r", "lora.r", true);
            number("lora_alpha", "lora.alpha", false);
            if (get("lora_dropout") == null) {
                put("lora.dropout", 0.0, "lora_dropout unset (axolotl's default 0.0)");
            } else {
                number("lora_dropout", "lora.dropout", false);
            }
            if (isTrue(get("peft_use_rslora"))) {
                put("lora.rslora", true, "peft_use_rslora");
            }
            if (isTrue(get("peft_use_dora"))) {
                put("lora.use_dora", true, "peft_use_dora"); // axolotl hands it to PEFT's LoraConfig(use_dora=...)
            }
            JsonNode init = get("peft_init_lora_weights");
            if (init != null && !init.isNull() && !(init.isBoolean() && !init.asBoolean())) {
                // axolotl hands a truthy value to PEFT's LoraConfig(init_lora_weights=...)
                try {
                    LoraInit parsed = LoraInit.parse(init.asText());
                    put("lora.init_lora_weights", parsed.equals(LoraInit.PEFT_DEFAULT) ? (Object) true
                            : parsed.toString(), "peft_init_lora_weights");
                } catch (IllegalArgumentException e) {
                    unmapped("peft_init_lora_weights", e.getMessage());
                }
            } else if (init != null) {
                used.add("peft_init_lora_weights"); // false: axolotl's `if cfg.peft_init_lora_weights:` drops it
            }
            Set<String> targets = new LinkedHashSet<>();
            List<String> from = new ArrayList<>();
            if (isTrue(get("lora_target_linear"))) {
                targets.addAll(EVERY_LINEAR_BUT_LM_HEAD);
                from.add("lora_target_linear: true (every linear layer but lm_head, the Mixtral router gate included)");
            } else {
                used.add("lora_target_linear");
            }
            JsonNode modules = get("lora_target_modules");
            if (modules != null && modules.isArray()) {
                List<String> unknown = new ArrayList<>();
                for (JsonNode module : modules) {
                    if (LoraConfig.MODULE_NAMES.contains(module.asText())) {
                        targets.add(module.asText());
                    } else {
                        unknown.add(module.asText());
                    }
                }
                if (unknown.isEmpty()) {
                    from.add("lora_target_modules");
                } else {
                    unmapped("lora_target_modules", "mixtune adapts only " + new java.util.TreeSet<>(
                            LoraConfig.MODULE_NAMES) + ", not " + unknown);
                }
            }
            if (!targets.isEmpty()) {
                put("lora.targets", List.copyOf(targets), String.join(" + ", from));
                used.add("lora_target_modules");
            }
        }

        private void mapData(String method) {
            JsonNode datasets = get("datasets");
            if (datasets != null && datasets.isArray()) {
                List<String> files = new ArrayList<>();
                Set<String> formats = new LinkedHashSet<>();
                List<String> problems = new ArrayList<>();
                Set<String> textFields = new LinkedHashSet<>();
                boolean lossKeys = false;
                for (JsonNode dataset : datasets) {
                    String path = dataset.path("path").asText();
                    files.add(path);
                    String type = dataset.path("type").asText();
                    // axolotl's kto types (prompt_strategies/kto) reshape a Hub dataset's own columns; mixtune's kto
                    // reads {prompt, completion, label} records or pairs, which a converted file holds
                    // rl: orpo loads its datasets with axolotl's ORPO strategies (prompt_strategies/orpo), which
                    // have no ultra; rl: simpo reads DPO's (utils/data/rl.py)
                    String format = List.of("kto", "orpo", "grpo").contains(method) ? null
                            : List.of("dpo", "cpo").contains(method) ? preferenceFormat(type)
                            : chatFormat(dataset, type);
                    if (format == null && type.equals("chat_template") && method.equals("sft")) {
                        problems.add(path + ": " + unreadFields(dataset) + " (mixtune reads messages of role and"
                                + " content, or conversations of from and value)");
                    } else if (method.equals("grpo")) {
                        problems.add(path + " of type '" + type + "' (mixtune's grpo reads files of {prompt} records,"
                                + " a string or messages, other fields for the reward functions: convert it to one)");
                    } else if (method.equals("orpo")) {
                        problems.add(path + " of type '" + type + "' (axolotl's rl: orpo types, prompt_strategies/orpo:"
                                + " chat_template.argilla, chatml.prompt_pairs, tokenize the pairs themselves: convert"
                                + " them to {prompt, chosen, rejected} pairs)");
                    } else if (method.equals("kto")) {
                        problems.add(path + " of type '" + type + "' (mixtune's kto reads files of {prompt,"
                                + " completion, label} records or {prompt, chosen, rejected} pairs: convert it to one)");
                    } else if (format == null) {
                        problems.add(path + " of type '" + type + "'" + (type.endsWith(".ultra") ? " (it writes "
                                + type.substring(0, type.length() - ".ultra".length()) + "'s chat template into the"
                                + " pairs; mixtune's templates are mistral and chatml)" : type.equals("input_output")
                                ? " (segments of text with label booleans, each tokenized alone without BOS: mixtune"
                                + " reads a prompt and a completion, {\"prompt\", \"completion\"} with"
                                + " data.format prompt_completion, the unlabeled text the prompt)" : ""));
                    } else {
                        formats.add(format);
                        if (format.equals("text")) {
                            // prompt_strategies/completion.py: ds_cfg's field, default "text"
                            textFields.add(dataset.path("field").asText("text"));
                        }
                    }
                    for (Map.Entry<String, JsonNode> key : dataset.properties()) {
                        String name = key.getKey();
                        JsonNode value = key.getValue();
                        boolean chatTemplate = type.equals("chat_template");
                        // chat_template's defaults (prompt_strategies/chat_template.py): every assistant turn and the
                        // EOS that closes it, which is mixtune's all_assistant_turns
                        if (name.equals("roles_to_train") && chatTemplate) {
                            lossKeys = true;
                            if (!(value.isArray() && value.size() == 1 && value.get(0).asText().equals("assistant"))) {
                                problems.add(path + ": roles_to_train " + value + " (mixtune trains the assistant's"
                                        + " turns: roles_to_train [assistant])");
                            }
                        } else if (name.equals("train_on_eos") && chatTemplate) {
                            lossKeys = true;
                            if (!value.asText().equals("turn")) {
                                problems.add(path + ": train_on_eos " + value + " (mixtune trains the EOS that closes"
                                        + " each assistant turn: train_on_eos turn)");
                            }
                        } else if (name.equals("roles") && chatTemplate) {
                            String unread = format == null ? null : unreadRoles(value, format);
                            if (unread != null) {
                                problems.add(path + ": roles " + value + " (" + unread + ")");
                            }
                        } else if (!Set.of("path", "type", "split", "field_messages", "message_property_mappings")
                                .contains(name) && !(name.equals("field") && type.equals("completion"))) {
                            problems.add(path + ": " + name + " " + value);
                        }
                    }
                }
                if (textFields.size() > 1) {
                    problems.add("completion datasets with different fields " + textFields + " (mixtune reads one"
                            + " data.dataset_text_field per recipe)");
                }
                if (!problems.isEmpty() || formats.size() > 1) {
                    unmapped("datasets", problems.isEmpty() ? "the datasets have different formats " + formats
                            + ", mixtune reads one per recipe" : "mixtune reads messages, sharegpt and alpaca chat"
                            + " files, completion texts (and {prompt, chosen, rejected} pairs for dpo); not "
                            + problems);
                } else {
                    put("data.files", files, "datasets[].path (a Hub dataset must be downloaded first: give the"
                            + " file)");
                    if (formats.contains("chatml-pairs")) {
                        put("data.template", "chatml", "datasets[].type: chatml.ultra, which writes ChatML into the"
                                + " pairs whatever chat_template says");
                    }
                    if (lossKeys && !isTrue(get("train_on_inputs"))) {
                        put("data.loss_on", "all_assistant_turns", "datasets[].roles_to_train [assistant],"
                                + " train_on_eos turn");
                    }
                    if (!formats.isEmpty() && !formats.contains("chatml-pairs")) {
                        put("data.format", formats.iterator().next(), "datasets[].type");
                        if (formats.contains("text")) {
                            String field = textFields.iterator().next();
                            if (!field.equals("text")) {
                                put("data.dataset_text_field", field, "datasets[].field");
                            }
                            // prompt_strategies/completion.py cuts a tokenized text every sequence_len tokens
                            // (overlap_len 0), as TRL's bfd_split cuts what overflows a row
                            if (method.equals("sft") && isTrue(get("sample_packing"))) {
                                put("data.packing_strategy", "bfd_split", "datasets[].type completion (axolotl cuts"
                                        + " a long text into chunks of sequence_len)");
                                // completion.py's load tokenizes with max_length sequence_len * 64 (truncation)
                                notes.add("axolotl's completion type cuts a text longer than sequence_len into chunks"
                                        + " of sequence_len tokens and trains them all, as data.packing_strategy"
                                        + " bfd_split does; the rows differ (axolotl's multipack sampler, TRL's best"
                                        + " fit decreasing), and axolotl first cuts a text to its first 64 x"
                                        + " sequence_len tokens, where bfd_split keeps every token");
                            } else {
                                notes.add("axolotl's completion type cuts a text longer than sequence_len into chunks"
                                        + " of sequence_len tokens and trains them all; unpacked, mixtune, as TRL's"
                                        + " SFTTrainer, keeps a text's first max_seq_len tokens: split long texts into"
                                        + " several records, or pack with data.packing_strategy bfd_split");
                            }
                        }
                        if (formats.contains("alpaca")) {
                            notes.add("axolotl renders alpaca records with the Alpaca prompt (\"Below is an"
                                    + " instruction...\"); mixtune renders them as one chat turn in data.template");
                        }
                    }
                }
            }
            JsonNode template = get("chat_template");
            if (template != null && values.containsKey("data.template")) {
                if (template.asText().equals("chatml")) {
                    used.add("chat_template");
                } else {
                    unmapped("chat_template", "the datasets' type chatml.ultra writes ChatML whatever chat_template"
                            + " says (data.template: chatml)");
                }
            } else if (template != null) {
                switch (template.asText()) {
                    case "chatml" -> put("data.template", "chatml", "chat_template");
                    // axolotl's mistral_v1 jinja writes ' [INST] ' after BOS and EOS, one more '▁' than mixtune's
                    // mistral, which spaces as mistral-common's InstructTokenizerV1 does
                    case "mistral_v1" -> put("data.template", "mistral", "chat_template: mistral_v1, near-equivalent"
                            + " (mistral-common's spacing: no ' ' after BOS and EOS)");
                    case "tokenizer_default" -> put("data.template", "hf", "chat_template: tokenizer_default (the"
                            + " model's own)");
                    case "jinja" -> unmapped("chat_template", "the template chat_template_jinja gives, which a"
                            + " recipe cannot hold (see chat_template_jinja)");
                    default -> {
                        if (template.asText().startsWith(TOKENIZER_DEFAULT_FALLBACK)) {
                            mapFallbackTemplate(template.asText().substring(TOKENIZER_DEFAULT_FALLBACK.length()));
                        } else {
                            unmapped("chat_template", "mixtune's templates are mistral (near-equivalent to axolotl's"
                                    + " mistral_v1), chatml and the model's own (tokenizer_default)");
                        }
                    }
                }
            }
            if (isTrue(get("train_on_inputs"))) {
                if (method.equals("sft")) {
                    put("data.loss_on", "train_on_inputs", "train_on_inputs: true");
                } else {
                    unmapped("train_on_inputs", "dpo trains on the chosen and rejected completions only");
                }
            }
            if (get("sequence_len") == null) {
                put("data.max_seq_len", 512, "sequence_len unset (axolotl's default 512)");
            } else {
                number("sequence_len", "data.max_seq_len", true);
            }
            JsonNode packing = get("sample_packing");
            if (method.equals("sft")) {
                put("data.packing", packing != null && packing.asBoolean(), packing != null ? "sample_packing"
                        : "sample_packing unset (axolotl's default: off)");
            } else if (packing != null && packing.asBoolean()) {
                unmapped("sample_packing", "dpo pairs are never packed");
            } else {
                used.add("sample_packing");
            }
            JsonNode validation = get("val_set_size");
            if (validation != null && validation.isNumber() && validation.asDouble() >= 0 && validation.asDouble() < 1) {
                put("data.validation_ratio", validation.asDouble(), "val_set_size");
            } else if (validation != null) {
                unmapped("val_set_size", "a count of samples; mixtune takes a fraction in [0, 1)");
            }
        }

        /**
         * tokenizer_default_fallback_NAME: the tokenizer's template where it has one, else NAME. With mistral_v1 that
         * is data.template auto; with chatml it is decided here by a local base_model's tokenizer_config.json, read as
         * data.template auto and hf read it.
         */
        private void mapFallbackTemplate(String fallback) {
            String from = "chat_template: " + TOKENIZER_DEFAULT_FALLBACK + fallback;
            JsonNode base = get("base_model");
            Path model = base == null ? null : Path.of(base.asText());
            switch (fallback) {
                case "mistral_v1" -> put("data.template", "auto", from + " (the model's own template, else mistral,"
                        + " near-equivalent to mistral_v1)");
                case "chatml" -> {
                    if (model == null || !Files.isDirectory(model)) {
                        unmapped("chat_template", "the model's template, else chatml: base_model is no local folder,"
                                + " so which one applies cannot be seen here, and mixtune's auto falls back to mistral:"
                                + " write chat_template: tokenizer_default or chatml");
                    } else if (hasChatTemplate(model)) {
                        put("data.template", "hf", from + " (base_model's tokenizer_config.json has a chat_template)");
                    } else {
                        put("data.template", "chatml", from + " (base_model's tokenizer has no chat_template)");
                    }
                }
                default -> unmapped("chat_template", "the model's template, else " + fallback + ", which mixtune lacks"
                        + " (its templates are mistral, near-equivalent to axolotl's mistral_v1, chatml and the"
                        + " model's own: tokenizer_default)");
            }
        }

        private static boolean hasChatTemplate(Path model) {
            Path config = model.resolve("tokenizer_config.json");
            try {
                return Files.isRegularFile(config)
                        && JinjaChatTemplate.fromTokenizerConfig(config.toString(), Files.readAllBytes(config)) != null;
            } catch (IOException e) {
                throw new UncheckedIOException("cannot read " + config + ": " + e.getMessage(), e);
            }
        }

        /** axolotl's SFT dataset types whose records mixtune reads as they are. */
        private String chatFormat(JsonNode dataset, String type) {
            switch (type) {
                case "completion":
                    return "text";
                case "alpaca":
                    return "alpaca";
                case "sharegpt":
                    return "sharegpt";
                case "chat_template": {
                    // axolotl's defaults are OpenAI's messages with role and content, which is mixtune's messages;
                    // conversations of from and value is how docs/dataset-formats/conversation.qmd reads what type
                    // sharegpt read (now refused), its default roles taking human and gpt for user and assistant
                    String messages = dataset.path("field_messages").asText("messages");
                    JsonNode mapping = dataset.path("message_property_mappings");
                    String role = mapping.path("role").asText("role");
                    String content = mapping.path("content").asText("content");
                    boolean onlyRoleAndContent = mapping.isMissingNode() || mapping.isNull() || mapping.size()
                            == (mapping.has("role") ? 1 : 0) + (mapping.has("content") ? 1 : 0);
                    if (!onlyRoleAndContent) {
                        return null;
                    }
                    if (messages.equals("messages") && role.equals("role") && content.equals("content")) {
                        return "messages";
                    }
                    return messages.equals("conversations") && role.equals("from") && content.equals("value")
                            ? "sharegpt" : null;
                }
                default:
                    return null;
            }
        }

        /** The field keys of a chat_template dataset mixtune does not read, as written. */
        private static String unreadFields(JsonNode dataset) {
            List<String> keys = new ArrayList<>();
            for (String key : List.of("field_messages", "message_property_mappings")) {
                if (dataset.has(key)) {
                    keys.add(key + " " + dataset.get(key));
                }
            }
            return String.join(", ", keys);
        }

        /**
         * axolotl's roles (target role: [the records' names for it]) against how mixtune's format reads the records'
         * roles: null when every name maps as mixtune maps it, else what mixtune reads and the pairs it does not.
         */
        private static String unreadRoles(JsonNode roles, String format) {
            Map<String, String> read = format.equals("sharegpt")
                    ? Map.of("system", "system", "human", "user", "user", "user", "gpt", "assistant", "assistant",
                            "assistant", "tool", "tool")
                    : Map.of("system", "system", "user", "user", "assistant", "assistant", "tool", "tool");
            List<String> unread = new ArrayList<>();
            if (!roles.isObject()) {
                unread.add(roles.toString());
            }
            for (Map.Entry<String, JsonNode> target : roles.properties()) {
                List<JsonNode> sources = new ArrayList<>();
                (target.getValue().isArray() ? target.getValue() : List.of(target.getValue())).forEach(sources::add);
                for (JsonNode source : sources) {
                    if (!target.getKey().equals(read.get(source.asText()))) {
                        unread.add(source.asText() + " as " + target.getKey());
                    }
                }
            }
            if (unread.isEmpty()) {
                return null;
            }
            return (format.equals("sharegpt") ? "mixtune's sharegpt reads from system, human or user, gpt or"
                    + " assistant, and tool" : "mixtune's messages read the roles system, user, assistant and tool as"
                    + " they are") + ": " + String.join(", ", unread) + " are not read";
        }

        /**
         * axolotl's DPO types whose records mixtune reads: TRL's {prompt, chosen, rejected} (UltraFeedback-binarized),
         * which chatml.ultra (prompt_strategies/dpo/chatml.py) renders in ChatML whatever chat_template says; the other
         * ultra types write templates mixtune lacks (llama3.ultra).
         */
        private static String preferenceFormat(String type) {
            return type.equals("chatml.ultra") ? "chatml-pairs" : null;
        }

        private void mapTrain(String method) {
            number("micro_batch_size", "train.micro_batch_size", true);
            number("gradient_accumulation_steps", "train.gradient_accumulation", true);
            JsonNode epochs = get("num_epochs");
            if (epochs != null && epochs.isNumber() && epochs.asDouble() == Math.rint(epochs.asDouble())) {
                put("train.epochs", epochs.asInt(), "num_epochs");
            } else if (epochs != null) {
                unmapped("num_epochs", "a fraction of an epoch; mixtune takes whole epochs (or max_steps)");
            }
            number("max_steps", "train.max_steps", true);
            number("learning_rate", "train.lr", false);
            JsonNode scheduler = get("lr_scheduler");
            // axolotl passes lr_scheduler (default cosine) and lr_scheduler_kwargs on to transformers' get_scheduler
            // (core/builders/base.py _configure_scheduler), but for one_cycle and rex, and for a cosine with
            // cosine_min_lr_ratio, which are its own (core/trainers/mixins/scheduler.py)
            String schedulerName = scheduler == null ? "cosine" : scheduler.asText();
            if (scheduler != null) {
                String schedule = switch (schedulerName) {
                    case "constant_with_warmup" -> "constant";
                    case "cosine_with_min_lr" -> "cosine"; // with min_lr_ratio from lr_scheduler_kwargs
                    default -> LearningRateSchedule.Kind.names().contains(schedulerName) ? schedulerName : null;
                };
                if (schedule == null) {
                    unmapped("lr_scheduler", SCHEDULERS_NOT_MAPPED.getOrDefault(schedulerName, "")
                            + "mixtune's schedules are transformers' " + String.join(", ",
                            LearningRateSchedule.Kind.names()) + ", constant_with_warmup and cosine_with_min_lr");
                } else {
                    put("train.schedule", schedule, "lr_scheduler");
                }
            }
            number("warmup_steps", "train.warmup_steps", true);
            JsonNode minLr = get("cosine_min_lr_ratio");
            boolean axolotlsCosineWithMinLr = minLr != null && get("cosine_constant_lr_ratio") == null
                    && schedulerName.equals("cosine");
            if (axolotlsCosineWithMinLr) {
                // axolotl's get_cosine_schedule_with_min_lr: (1 - ratio) x cosine + ratio, transformers' min_lr_rate
                number("cosine_min_lr_ratio", "train.min_lr_ratio", false);
            } else if (minLr != null) {
                unmapped("cosine_min_lr_ratio", "axolotl reads it with lr_scheduler: cosine and no"
                        + " cosine_constant_lr_ratio only; mixtune's train.min_lr_ratio is that floor");
            }
            if (scheduler != null && scheduler.asText().equals("constant") && get("warmup_steps") != null) {
                // transformers' get_scheduler("constant") is get_constant_schedule(optimizer): no warmup at all,
                // while mixtune's constant warms up first (axolotl passes the name on to transformers)
                values.put("train.warmup_steps", 0);
                comments.put("train.warmup_steps",
                        "axolotl: warmup_steps (" + get("warmup_steps") + "), which lr_scheduler: constant ignores");
            }
            JsonNode ratio = get("warmup_ratio");
            if (ratio != null && get("rl") != null && get("rl").asText().equals("simpo")) {
                // axolotl's config validator (check_simpo_warmup) refuses the config
                unmapped("warmup_ratio", "axolotl refuses it with rl: simpo: give warmup_steps instead");
            } else if (ratio != null && get("warmup_steps") != null) {
                unmapped("warmup_ratio", "warmup_steps is set, which axolotl uses instead");
            } else if (ratio != null && scheduler != null && scheduler.asText().equals("constant")) {
                used.add("warmup_ratio");
                values.put("train.warmup_steps", 0);
                comments.put("train.warmup_steps",
                        "axolotl: warmup_ratio (" + ratio + "), which lr_scheduler: constant ignores");
            } else if (ratio != null && ratio.isNumber() && ratio.asDouble() >= 0 && ratio.asDouble() <= 1) {
                // axolotl passes int(ratio x steps), rounded down; mixtune rounds up as transformers does
                put("train.warmup_ratio", ratio.asDouble(), "warmup_ratio (axolotl rounds ratio x steps down, mixtune"
                        + " up as transformers: a step more where it is not whole)");
            } else if (ratio != null) {
                unmapped("warmup_ratio", "expected a fraction of the steps in [0, 1]");
            } else if (get("warmup_steps") == null && !(scheduler != null && scheduler.asText().equals("constant"))) {
                // core/builders/base.py _configure_warmup_and_logging
                notes.add("the config sets neither warmup_steps nor warmup_ratio: axolotl then warms up"
                        + " min(int(0.03 x total steps), 100) steps, a count mixtune cannot know at import; set"
                        + " train.warmup_steps to it from the steps mixtune train announces (mixtune's default is 0)");
            }
            mapSchedulerKwargs(scheduler == null ? null : schedulerName, axolotlsCosineWithMinLr);
            steps("eval_steps", "train.eval_every");
            steps("save_steps", "train.save_every");
            JsonNode keep = get("save_total_limit");
            if (keep == null || (keep.isNumber() && keep.asDouble() == 0)) {
                // core/builders/base.py: save_total_limit if save_total_limit else 4
                put("train.keep_last", 4, "save_total_limit " + (keep == null ? "unset" : "0") + " (axolotl passes 4)");
            } else {
                number("save_total_limit", "train.keep_last", true);
            }
            mapBestModel();
            mapRouterLoss();
            mapOptimizer();
            mapLoraPlus();
            number("max_grad_norm", "train.max_grad_norm", false);
            number("adam_beta1", "train.adam_beta1", false);
            number("adam_beta2", "train.adam_beta2", false);
            number("adam_epsilon", "train.adam_eps", false);
            number("seed", "train.seed", true);
            if (method.equals("sft")) {
                number("neftune_noise_alpha", "train.neftune_noise_alpha", false);
            } else if (get("neftune_noise_alpha") != null) {
                unmapped("neftune_noise_alpha", "mixtune applies NEFTune to sft only (a DPO reference pass through the "
                        + "same PEFT model would be noised too)");
            }
            JsonNode checkpointing = get("gradient_checkpointing");
            if (checkpointing != null && checkpointing.isBoolean()) {
                put("train.gradient_checkpointing", checkpointing.asBoolean(), "gradient_checkpointing");
            } else if (checkpointing != null) {
                unmapped("gradient_checkpointing", "mixtune checkpoints each decoder layer: true or false");
            }
            JsonNode outputDir = get("output_dir");
            if (outputDir != null) {
                put("output_dir", outputDir.asText(), "output_dir");
            }
            if (isTrue(get("use_tensorboard"))) {
                put("logging.tensorboard", true, "use_tensorboard");
            }
        }

        /**
         * LoRA+: axolotl's trainer hands loraplus_lr_ratio and loraplus_lr_embedding to PEFT's
         * create_loraplus_optimizer with transformers' optimizer kwargs (lr, betas, eps) only, so PEFT's
         * loraplus_weight_decay default, 0, is every group's decay and weight_decay goes unused.
         */
        /**
         * early_stopping_patience, load_best_model_at_end, metric_for_best_model and greater_is_better as axolotl's
         * core/builders/causal.py passes them: an EarlyStoppingCallback of the patience (threshold 0);
         * load_best_model_at_end when it or early_stopping_patience is set and there is validation data and save_steps
         * is a multiple of eval_steps, else silently off; greater_is_better only when true (false leaves
         * transformers' choice by the metric's name).
         */
        private void mapBestModel() {
            JsonNode patience = get("early_stopping_patience");
            JsonNode loadBest = get("load_best_model_at_end");
            if (patience != null && patience.isNumber() && patience.asDouble() == 0) {
                used.add("early_stopping_patience"); // 0 is falsy to axolotl: no EarlyStoppingCallback
            } else {
                number("early_stopping_patience", "train.early_stopping_patience", true);
            }
            JsonNode save = get("save_steps");
            JsonNode eval = get("eval_steps");
            JsonNode validation = get("val_set_size");
            boolean validated = validation != null && validation.asDouble(0) > 0 || get("test_datasets") != null;
            boolean compatible = save != null && eval != null && save.isIntegralNumber() && eval.isIntegralNumber()
                    && eval.asLong() > 0 && save.asLong() % eval.asLong() == 0;
            boolean asked = isTrue(loadBest) || patience != null && patience.asDouble(0) != 0;
            if (asked && validated && compatible) {
                put("train.load_best_model_at_end", true, loadBest != null && isTrue(loadBest)
                        ? "load_best_model_at_end" : "early_stopping_patience (axolotl then loads the best model too)");
                used.add("load_best_model_at_end");
            } else if (isTrue(loadBest)) {
                unmapped("load_best_model_at_end", "axolotl turns it off unless there is validation data and "
                        + "save_steps is a multiple of eval_steps (both set): set those and train.load_best_model_at_end");
            } else if (loadBest != null) {
                used.add("load_best_model_at_end");
            }
            JsonNode metric = get("metric_for_best_model");
            if (metric != null && metric.isTextual()) {
                put("train.metric_for_best_model", metric.asText(), "metric_for_best_model");
            } else if (metric != null) {
                unmapped("metric_for_best_model", "expected the name of an evaluation metric");
            }
            JsonNode greater = get("greater_is_better");
            boolean compared = metric != null && metric.isTextual() || asked && validated && compatible
                    || patience != null && patience.asDouble(0) != 0;
            if (isTrue(greater) && !compared) {
                used.add("greater_is_better");
                notes.add("greater_is_better: true has no effect without metric_for_best_model, "
                        + "load_best_model_at_end or early_stopping_patience (transformers compares nothing): dropped");
            } else if (isTrue(greater)) {
                put("train.greater_is_better", true, "greater_is_better");
            } else if (greater != null) {
                used.add("greater_is_better");
                notes.add("greater_is_better: false is not passed on by axolotl (only true is): transformers then "
                        + "decides by the metric's name (false for one ending in loss), as mixtune's null does");
            }
        }

        private void mapLoraPlus() {
            number("loraplus_lr_ratio", "train.loraplus_lr_ratio", false);
            number("loraplus_lr_embedding", "train.loraplus_lr_embedding", false);
            JsonNode decay = get("weight_decay");
            if (values.containsKey("train.loraplus_lr_ratio") && decay != null) {
                put("train.weight_decay", 0.0, "weight_decay (" + decay.asText() + "), which axolotl does not pass to"
                        + " create_loraplus_optimizer: its loraplus_weight_decay 0 applies");
            } else {
                number("weight_decay", "train.weight_decay", false);
            }
        }

        /**
         * transformers adds Mixtral's load-balancing loss only where config.output_router_logits is true (its default
         * is false), which axolotl sets through model_config; mixtune's router_aux_loss defaults to true. Its weight,
         * model_config.router_aux_loss_coef, overrides config.json's as train.router_aux_loss_coef does.
         */
        private void mapRouterLoss() {
            JsonNode modelConfig = get("model_config");
            JsonNode logits = modelConfig == null ? null : modelConfig.get("output_router_logits");
            boolean on = logits != null && logits.asBoolean(false);
            put("train.router_aux_loss", on, logits != null ? "model_config.output_router_logits: " + logits
                    : "model_config.output_router_logits unset (transformers' default false: no router load-balancing"
                            + " loss)");
            JsonNode coefficient = modelConfig == null ? null : modelConfig.get("router_aux_loss_coef");
            boolean coefficientMapped = false;
            if (coefficient != null && coefficient.isNumber() && on) {
                put("train.router_aux_loss_coef", coefficient.asDouble(), "model_config.router_aux_loss_coef: "
                        + coefficient);
                coefficientMapped = true;
            } else if (coefficient != null && coefficient.isNumber()) {
                // transformers weighs no router loss without output_router_logits, and mixtune refuses a weight of a
                // term that is off
                unmapped("model_config", "router_aux_loss_coef weighs the router load-balancing loss, which is off "
                        + "without output_router_logits: true: dropped");
                coefficientMapped = true;
            }
            if (modelConfig != null) {
                List<String> others = new ArrayList<>();
                boolean skipCoefficient = coefficientMapped;
                modelConfig.fieldNames().forEachRemaining(name -> {
                    if (!name.equals("output_router_logits") && !(skipCoefficient
                            && name.equals("router_aux_loss_coef"))) {
                        others.add(name);
                    }
                });
                if (!others.isEmpty()) {
                    unmapped("model_config", "mixtune maps only output_router_logits (train.router_aux_loss) and "
                            + "router_aux_loss_coef (train.router_aux_loss_coef) and reads the rest from the model's "
                            + "config.json: not " + others);
                }
            }
        }

        /**
         * lr_scheduler_kwargs, which axolotl hands to transformers' get_scheduler as they are: each kwarg that
         * transformers' schedule takes is the train key of its name (min_lr_rate is min_lr_ratio, and min_lr is
         * min_lr_ratio = min_lr / learning_rate, as transformers divides); the others are listed.
         *
         * @param scheduler axolotl's lr_scheduler as written, or null when unset (axolotl's cosine)
         * @param axolotlsCosineWithMinLr axolotl builds its own cosine, which reads no kwargs
         */
        private void mapSchedulerKwargs(String scheduler, boolean axolotlsCosineWithMinLr) {
            JsonNode kwargs = get("lr_scheduler_kwargs");
            if (kwargs == null) {
                return;
            }
            if (!kwargs.isObject()) {
                unmapped("lr_scheduler_kwargs", "expected a mapping of transformers' kwarg names to values");
                return;
            }
            used.add("lr_scheduler_kwargs");
            String name = scheduler == null ? "cosine" : scheduler;
            List<String> takes = SCHEDULER_KWARGS.get(name);
            for (Map.Entry<String, JsonNode> kwarg : kwargs.properties()) {
                String key = kwarg.getKey();
                String axolotlKey = "lr_scheduler_kwargs." + key;
                JsonNode value = kwarg.getValue();
                String why = axolotlsCosineWithMinLr ? "axolotl's cosine with cosine_min_lr_ratio (its own"
                        + " get_cosine_schedule_with_min_lr) reads no lr_scheduler_kwargs"
                        : name.equals("constant") || name.equals("constant_with_warmup") ? "transformers' " + name
                        + " reads no lr_scheduler_kwargs"
                        : takes == null ? "lr_scheduler " + name + " is not mapped"
                        : !takes.contains(key) ? "transformers' " + name + " takes " + (takes.isEmpty() ? "no kwargs"
                        : String.join(", ", takes)) + " (its run stops with a TypeError)" : null;
                Object mapped = why != null ? null : switch (key) {
                    case "warmup_type", "decay_type" -> value.isTextual() ? value.asText() : null;
                    case "timescale", "num_stable_steps", "num_decay_steps" -> {
                        Double number = number(value);
                        yield number != null && number == Math.rint(number) ? (Object) number.intValue() : null;
                    }
                    case "min_lr" -> {
                        Double minLr = number(value);
                        Double lr = get("learning_rate") == null ? null : number(get("learning_rate"));
                        yield minLr == null || lr == null ? null : minLr / lr;
                    }
                    default -> number(value);
                };
                if (why == null && mapped == null) {
                    why = key.endsWith("_type") ? "expected linear, cosine or 1-sqrt" : key.equals("min_lr")
                            ? "expected a number, and learning_rate to divide it by" : "expected a number";
                }
                if (why != null) {
                    used.add("lr_scheduler_kwargs");
                    unmapped.add(tree.originOf(axolotlKey) + ": " + axolotlKey + ": " + value + ": " + why);
                } else {
                    String recipeKey = key.equals("min_lr_rate") || key.equals("min_lr") ? "min_lr_ratio" : key;
                    put("train." + recipeKey, mapped, axolotlKey + (key.equals("min_lr") ? " / learning_rate" : ""));
                }
            }
        }

        private static Double number(JsonNode value) {
            return value.isNumber() ? Double.valueOf(value.asDouble()) : value.isTextual() ? parse(value.asText())
                    : null;
        }

        /** eval_steps and save_steps: a step count, or (below 1) a fraction of the total steps. */
        private void steps(String axolotlKey, String recipeKey) {
            JsonNode value = get(axolotlKey);
            Double number = value == null ? null : value.isNumber() ? Double.valueOf(value.asDouble())
                    : parse(value.asText());
            if (number != null && number > 0 && number < 1) {
                unmapped(axolotlKey, "a fraction of the total steps; mixtune counts in steps: set " + recipeKey
                        + " to this fraction of the steps mixtune train announces");
            } else {
                number(axolotlKey, recipeKey, true);
            }
        }

        /** A number key; learning rates written as 2e-4 are strings to YAML 1.1, so text that parses counts too. */
        private void number(String axolotlKey, String recipeKey, boolean integer) {
            JsonNode value = get(axolotlKey);
            if (value == null) {
                return;
            }
            Double number = value.isNumber() ? Double.valueOf(value.asDouble()) : parse(value.asText());
            if (number == null || (integer && number != Math.rint(number))) {
                unmapped(axolotlKey, "expected " + (integer ? "an integer" : "a number"));
            } else {
                put(recipeKey, integer ? (Object) number.intValue() : (Object) number, axolotlKey);
            }
        }

        private static Double parse(String text) {
            try {
                return Double.valueOf(text.trim());
            } catch (NumberFormatException e) {
                return null;
            }
        }

        private static boolean isTrue(JsonNode value) {
            return value != null && value.asBoolean(false);
        }

        private static boolean isFalse(JsonNode value) {
            return value.isBoolean() && !value.asBoolean();
        }

        private String render() {
            StringBuilder out = new StringBuilder();
            out.append("# Imported from the axolotl config ").append(file.getFileName())
                    .append(" by mixtune recipes import.\n# Every key not named here comes from"
                            + " configs/recipe-defaults.yaml.\n");
            for (String note : notes) {
                out.append("# Note: ").append(note).append(".\n");
            }
            if (!unmapped.isEmpty()) {
                out.append("# Not mapped (").append(unmapped.size()).append(unmapped.size() == 1 ? " key" : " keys")
                        .append("):\n");
                for (String line : unmapped) {
                    out.append("#   ").append(line).append('\n');
                }
            }
            for (String section : SECTIONS) {
                boolean opened = false;
                for (Map.Entry<String, Object> entry : values.entrySet()) {
                    if (!entry.getKey().startsWith(section + ".")) {
                        continue;
                    }
                    if (!opened) {
                        out.append(section).append(":\n");
                        opened = true;
                    }
                    out.append(line("  " + entry.getKey().substring(section.length() + 1), entry.getValue(),
                            comments.get(entry.getKey())));
                }
            }
            if (values.containsKey("output_dir")) {
                out.append(line("output_dir", values.get("output_dir"), comments.get("output_dir")));
            }
            return out.toString();
        }

        private static String line(String key, Object value, String comment) {
            return key + ": " + yaml(value) + "   # " + comment + "\n";
        }

        private static String yaml(Object value) {
            if (value instanceof List<?> list) {
                return "[" + String.join(", ", list.stream().map(AxolotlImport.Mapping::yaml).toList()) + "]";
            }
            if (value instanceof String text) {
                return text.matches("[A-Za-z0-9_./-]+") && !text.matches("(?i)true|false|null|yes|no|on|off|~")
                        ? text : "\"" + text.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
            }
            if (value instanceof Double number) {
                return number == Math.rint(number) && Math.abs(number) < 1e9 ? String.format(Locale.ROOT, "%.1f", number)
                        : Double.toString(number);
            }
            return String.valueOf(value);
        }
    }
}
