package io.mixtune.trainer.recipe;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.lora.adapter.LoraConfig;
import java.io.IOException;
import java.io.Reader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
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
 * set nothing and are skipped.
 */
public final class AxolotlImport {
    /** The recipe's sections in the order recipes are written. */
    private static final List<String> SECTIONS = List.of("model", "lora", "data", "train", "dpo");

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
            "special_tokens", "lora_model_dir");

    /** Why some common axolotl keys have no recipe setting, where it is not plain that mixtune lacks the feature. */
    private static final Map<String, String> WHY_NOT = Map.of(
            "model_type", "mixtune reads the architecture from the model's config.json",
            "tokenizer_type", "mixtune reads the model's own tokenizer.json",
            "trust_remote_code", "mixtune runs no model code from the Hub",
            "optimizer", "mixtune's optimizer is AdamW with fp32 moments (train.adam_beta1, adam_beta2, adam_eps)",
            "bf16", "mixtune computes in model.compute_dtype: auto (fp16 on a GPU, fp32 on CPU), fp32 or fp16; no bf16",
            "fp16", "set model.compute_dtype: fp16 (auto picks it on a GPU)",
            "evals_per_epoch", "mixtune counts in steps: train.eval_every",
            "saves_per_epoch", "mixtune counts in steps: train.save_every",
            "deepspeed", "mixtune trains on one device",
            "fsdp", "mixtune trains on one device");

    private AxolotlImport() {}

    /**
     * @param recipe the recipe as YAML text, with comments naming the axolotl keys
     * @param values each mapped recipe key (dotted) with its value, for checks
     * @param unmapped each axolotl key mixtune did not map: "file:line: key: value: why"
     */
    public record Result(String recipe, Map<String, Object> values, List<String> unmapped) {}

    public static Result read(Path file) {
        YamlTree tree;
        try (Reader reader = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            tree = YamlTree.parse(reader, file.toString());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file + ": " + e.getMessage(), e);
        }
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
            return new Result(render(), values, List.copyOf(unmapped));
        }

        private String mapTrainingMethod() {
            JsonNode rl = get("rl");
            if (rl == null) {
                return "sft";
            }
            if (rl.asText().equals("dpo")) {
                put("train.method", "dpo", "rl: dpo");
                JsonNode beta = get("dpo_beta");
                if (beta != null && beta.isNumber()) {
                    put("dpo.beta", beta.asDouble(), "dpo_beta");
                }
                return "dpo";
            }
            unmapped("rl", "mixtune trains sft or dpo only");
            return "sft";
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
                put("model.quantize", quantized ? "nf4" : "none", "adapter: " + adapter.asText()
                        + (fourBit ? ", load_in_4bit: true" : ""));
                used.add("load_in_4bit");
            } else {
                unmapped("adapter", "mixtune trains lora and qlora adapters");
            }
        }

        private void mapLora() {
            number("lora_r", "lora.r", true);
            number("lora_alpha", "lora.alpha", false);
            number("lora_dropout", "lora.dropout", false);
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
                for (JsonNode dataset : datasets) {
                    files.add(dataset.path("path").asText());
                    String type = dataset.path("type").asText();
                    String format = method.equals("dpo") ? preferenceFormat(type) : chatFormat(dataset, type);
                    if (format == null) {
                        problems.add(dataset.path("path").asText() + " of type '" + type + "'");
                    } else {
                        formats.add(format);
                    }
                    for (Map.Entry<String, JsonNode> key : dataset.properties()) {
                        if (!Set.of("path", "type", "split", "field_messages", "message_property_mappings")
                                .contains(key.getKey())) {
                            problems.add(dataset.path("path").asText() + ": " + key.getKey() + " " + key.getValue());
                        }
                    }
                }
                if (!problems.isEmpty() || formats.size() > 1) {
                    unmapped("datasets", problems.isEmpty() ? "the datasets have different formats " + formats
                            + ", mixtune reads one per recipe" : "mixtune reads messages, sharegpt and alpaca chat"
                            + " files (and {prompt, chosen, rejected} pairs for dpo); not " + problems);
                } else {
                    put("data.files", files, "datasets[].path (a Hub dataset must be downloaded first: give the"
                            + " file)");
                    if (!formats.isEmpty() && !formats.contains("pairs")) {
                        put("data.format", formats.iterator().next(), "datasets[].type");
                        if (formats.contains("alpaca")) {
                            notes.add("axolotl renders alpaca records with the Alpaca prompt (\"Below is an"
                                    + " instruction...\"); mixtune renders them as one chat turn in data.template");
                        }
                    }
                }
            }
            JsonNode template = get("chat_template");
            if (template != null) {
                String name = switch (template.asText()) {
                    case "chatml" -> "chatml";
                    case "mistral_v1" -> "mistral";
                    default -> null;
                };
                if (name == null) {
                    unmapped("chat_template", "mixtune's templates are mistral (axolotl's mistral_v1) and chatml");
                } else {
                    put("data.template", name, "chat_template");
                }
            }
            number("sequence_len", "data.max_seq_len", true);
            JsonNode packing = get("sample_packing");
            if (packing != null && method.equals("sft")) {
                put("data.packing", packing.asBoolean(), "sample_packing");
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

        /** axolotl's SFT dataset types whose records mixtune reads as they are. */
        private String chatFormat(JsonNode dataset, String type) {
            switch (type) {
                case "alpaca":
                    return "alpaca";
                case "sharegpt":
                    return "sharegpt";
                case "chat_template": {
                    // axolotl's defaults are OpenAI's messages with role and content, which is mixtune's messages.
                    boolean messages = dataset.path("field_messages").asText("messages").equals("messages");
                    JsonNode mapping = dataset.path("message_property_mappings");
                    boolean plain = mapping.isMissingNode() || (mapping.path("role").asText("role").equals("role")
                            && mapping.path("content").asText("content").equals("content") && mapping.size() <= 2);
                    return messages && plain ? "messages" : null;
                }
                default:
                    return null;
            }
        }

        /** axolotl's DPO types that are TRL's {prompt, chosen, rejected} records (UltraFeedback-binarized). */
        private static String preferenceFormat(String type) {
            return type.endsWith(".ultra") ? "pairs" : null;
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
            if (scheduler != null) {
                String schedule = switch (scheduler.asText()) {
                    case "cosine" -> "cosine";
                    case "linear" -> "linear";
                    case "constant", "constant_with_warmup" -> "constant";
                    default -> null;
                };
                if (schedule == null) {
                    unmapped("lr_scheduler", "mixtune's schedules are constant, linear and cosine");
                } else {
                    put("train.schedule", schedule, "lr_scheduler");
                }
            }
            number("warmup_steps", "train.warmup_steps", true);
            if (scheduler != null && scheduler.asText().equals("constant") && get("warmup_steps") != null) {
                // transformers' get_scheduler("constant") is get_constant_schedule(optimizer): no warmup at all,
                // while mixtune's constant warms up first (axolotl passes the name on to transformers)
                values.put("train.warmup_steps", 0);
                comments.put("train.warmup_steps",
                        "axolotl: warmup_steps (" + get("warmup_steps") + "), which lr_scheduler: constant ignores");
            }
            if (get("warmup_ratio") != null) {
                unmapped("warmup_ratio", "mixtune counts warmup in steps: set train.warmup_steps to this fraction of"
                        + " the steps mixtune train announces");
            }
            number("weight_decay", "train.weight_decay", false);
            number("max_grad_norm", "train.max_grad_norm", false);
            number("adam_beta1", "train.adam_beta1", false);
            number("adam_beta2", "train.adam_beta2", false);
            number("adam_epsilon", "train.adam_eps", false);
            number("seed", "train.seed", true);
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
                out.append("# Not mapped (").append(unmapped.size()).append(" keys):\n");
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
