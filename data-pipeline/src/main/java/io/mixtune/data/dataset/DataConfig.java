package io.mixtune.data.dataset;

import io.mixtune.data.batch.PackingStrategy;
import io.mixtune.data.read.ChatFormat;
import io.mixtune.data.template.ChatTemplate;
import io.mixtune.data.template.CustomTemplate;
import io.mixtune.data.template.CustomTemplateConfig;
import io.mixtune.data.template.HfChatTemplate;
import io.mixtune.data.template.JinjaChatTemplate;
import io.mixtune.data.template.MistralTemplate;
import io.mixtune.data.template.LossPolicy;
import io.mixtune.model.config.BundledFiles;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/**
 * The {@code data:} section of a recipe: which files, how they become token rows. YAML keys are the snake_case of the
 * component names. A constructor error starts with the key it is about ("max_seq_len: ..."), so the recipe reader can
 * point at the line.
 *
 * @param files training files (JSONL or a JSON array, plain or gzip), relative to the working directory (see
 *     {@link #file})
 * @param validationFiles files of the validation set; when empty, {@code validationRatio} of the training samples
 * @param validationRatio fraction of training samples held out (seeded by the train seed), in [0, 1)
 * @param format {@code auto} (detect per file) or a {@code ChatFormat} key: messages, ultrachat, sharegpt, firefly,
 *     alpaca, text (language modeling) or prompt_completion
 * @param template {@code auto} (the model's own chat_template, from its chat_template.jinja or tokenizer_config.json,
 *     else mistral),
 *     {@code hf} (the model's own, required), {@code mistral}, {@code chatml} or {@code custom} (then
 *     {@code customTemplate} says how)
 * @param customTemplate per-role prefixes and suffixes, used when template is custom, else null
 * @param maxSeqLen longest sample (but see {@link #sampleLength}), and the row length when packing
 * @param packing pack samples into rows of maxSeqLen (attention stays inside a sample); otherwise length-grouped
 *     padded batches
 * @param lossOn {@code all_assistant_turns}, {@code last_turn} or {@code train_on_inputs}; a prompt-completion record
 *     trains its completion under the first two and everything under train_on_inputs (TRL's completion_only_loss
 *     false); a text trains every token whatever it says
 * @param skipInvalid skip and count bad records instead of stopping at the first
 * @param datasetTextField the field of a language-modeling record's text (TRL's dataset_text_field)
 * @param packingStrategy with packing, a {@link PackingStrategy} key (TRL's packing_strategy): bfd (samples cut to
 *     maxSeqLen), bfd_split or wrapped (samples kept whole, split across rows)
 * @param packingFit how bfd bins its samples: {@value #BEST_FIT} (TRL's best fit decreasing) or {@value #FIRST_FIT}
 *     (mixtune's bfd before 2026-12-08, which a run recorded then resumes with: its recipe.yaml has no packing_fit)
 */
public record DataConfig(List<String> files, List<String> validationFiles, double validationRatio, String format,
        String template, CustomTemplateConfig customTemplate, int maxSeqLen, boolean packing, String lossOn,
        boolean skipInvalid, String datasetTextField, String packingStrategy, String packingFit) {

    public static final String BEST_FIT = "best_fit";
    public static final String FIRST_FIT = "first_fit";

    public static final List<String> TEMPLATES = List.of("auto", "hf", "mistral", "chatml", "custom");
    /** hf:NAME: the model's template NAME, as transformers' apply_chat_template(chat_template=NAME) picks it. */
    public static final String NAMED = "hf:";

    /** A data section whose texts, if any, are in the field {@code text} (TRL's default). */
    public DataConfig(List<String> files, List<String> validationFiles, double validationRatio, String format,
            String template, CustomTemplateConfig customTemplate, int maxSeqLen, boolean packing, String lossOn,
            boolean skipInvalid) {
        this(files, validationFiles, validationRatio, format, template, customTemplate, maxSeqLen, packing, lossOn,
                skipInvalid, "text");
    }

    /** A data section packed, if at all, as TRL's default bfd. */
    public DataConfig(List<String> files, List<String> validationFiles, double validationRatio, String format,
            String template, CustomTemplateConfig customTemplate, int maxSeqLen, boolean packing, String lossOn,
            boolean skipInvalid, String datasetTextField) {
        this(files, validationFiles, validationRatio, format, template, customTemplate, maxSeqLen, packing, lossOn,
                skipInvalid, datasetTextField, PackingStrategy.BFD.key());
    }

    /** A data section that packs bfd, if it does, best fit as TRL. */
    public DataConfig(List<String> files, List<String> validationFiles, double validationRatio, String format,
            String template, CustomTemplateConfig customTemplate, int maxSeqLen, boolean packing, String lossOn,
            boolean skipInvalid, String datasetTextField, String packingStrategy) {
        this(files, validationFiles, validationRatio, format, template, customTemplate, maxSeqLen, packing, lossOn,
                skipInvalid, datasetTextField, packingStrategy, BEST_FIT);
    }

    public DataConfig {
        if (files == null || files.isEmpty()) {
            throw new IllegalArgumentException("files: at least one training file is needed");
        }
        files = List.copyOf(files);
        validationFiles = validationFiles == null ? List.of() : List.copyOf(validationFiles);
        if (!(validationRatio >= 0 && validationRatio < 1)) {
            throw new IllegalArgumentException("validation_ratio: must lie in [0, 1), got " + validationRatio);
        }
        if (maxSeqLen < 2) {
            throw new IllegalArgumentException("max_seq_len: must be at least 2, got " + maxSeqLen);
        }
        if (!"auto".equals(format)) {
            try {
                ChatFormat.byKey(format == null ? "" : format);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("format: expected auto or one of " + ChatFormat.KEYS + ", got \""
                        + format + "\"");
            }
        }
        if (datasetTextField == null || datasetTextField.isBlank()) {
            throw new IllegalArgumentException("dataset_text_field: expected the name of the field that holds a "
                    + "text record's text (TRL's default: text), got \"" + datasetTextField + "\"");
        }
        if (!TEMPLATES.contains(template) && !(template.startsWith(NAMED) && template.length() > NAMED.length())) {
            throw new IllegalArgumentException("template: expected auto, hf, hf:NAME, mistral, chatml or custom, got \""
                    + template + "\"");
        }
        lossPolicy(lossOn);
        try {
            PackingStrategy.byKey(packingStrategy);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("packing_strategy: " + e.getMessage()
                    + (e.getMessage().startsWith("expected") ? " (TRL's packing_strategy)" : ""));
        }
        if (!packing && PackingStrategy.byKey(packingStrategy) != PackingStrategy.BFD) {
            // TRL ignores packing_strategy without packing; a recipe that names one surely means to pack
            throw new IllegalArgumentException("packing_strategy: " + packingStrategy + " packs, but packing is "
                    + "false (set packing: true, or leave packing_strategy at bfd)");
        }
        if (!BEST_FIT.equals(packingFit) && !FIRST_FIT.equals(packingFit)) {
            throw new IllegalArgumentException("packing_fit: expected " + BEST_FIT + " (TRL's bfd) or " + FIRST_FIT
                    + " (mixtune's bfd before 2026-12-08), got \"" + packingFit + "\"");
        }
        if (FIRST_FIT.equals(packingFit) && (!packing || PackingStrategy.byKey(packingStrategy) != PackingStrategy.BFD)) {
            throw new IllegalArgumentException("packing_fit: first_fit bins packing_strategy bfd's rows as mixtune did "
                    + "before 2026-12-08, but " + (packing ? "packing_strategy is " + packingStrategy
                    + ", which packs as TRL" : "packing is false") + ": drop packing_fit");
        }
        if ("custom".equals(template) && customTemplate == null) {
            throw new IllegalArgumentException("custom_template: template is custom but no custom_template is given");
        }
    }

    /**
     * A data file as a recipe names it: relative to the working directory, else the file of that name bundled in the
     * jar ({@code data/samples/}), so that a recipe naming the sample chats runs from any directory. A name found in
     * neither place comes back as given, for the reader to report missing.
     */
    public static Path file(String name) {
        Path onDisk = Path.of(name);
        if (Files.exists(onDisk)) {
            return onDisk;
        }
        return BundledFiles.find(name).filter(Files::isRegularFile).orElse(onDisk);
    }

    /** The loss policy {@code lossOn} names. */
    public LossPolicy lossPolicy() {
        return lossPolicy(lossOn);
    }

    private static LossPolicy lossPolicy(String lossOn) {
        return switch (lossOn == null ? "" : lossOn) {
            case "all_assistant_turns" -> LossPolicy.ALL_ASSISTANT_TURNS;
            case "last_turn" -> LossPolicy.LAST_TURN;
            case "train_on_inputs" -> LossPolicy.TRAIN_ON_INPUTS;
            default -> throw new IllegalArgumentException("loss_on: expected all_assistant_turns, last_turn or "
                    + "train_on_inputs, got \"" + lossOn + "\"");
        };
    }

    /** The packing strategy {@code packingStrategy} names, bfd binned as {@code packingFit} says. */
    public PackingStrategy packer() {
        PackingStrategy strategy = PackingStrategy.byKey(packingStrategy);
        return strategy == PackingStrategy.BFD && FIRST_FIT.equals(packingFit) ? PackingStrategy.BFD_FIRST_FIT
                : strategy;
    }

    /**
     * The longest sample: maxSeqLen, but no limit where packing splits long samples across rows (TRL truncates
     * nothing before packing).
     */
    public int sampleLength() {
        return packing && !packer().truncates() ? Integer.MAX_VALUE : maxSeqLen;
    }

    /** The chat format {@code format} names, or null to detect it per file. */
    public ChatFormat chatFormat() {
        return "auto".equals(format) ? null : ChatFormat.byKey(format);
    }

    /**
     * The chat template named by {@code template}, the custom one built from {@code customTemplate}; without a model
     * to ask, auto is mistral.
     */
    public ChatTemplate chatTemplate(long bosId, long eosId) {
        return switch (template) {
            case "custom" -> new CustomTemplate(customTemplate, bosId, eosId);
            case "auto" -> new MistralTemplate(bosId, eosId);
            case "hf" -> throw new IllegalArgumentException("template: hf uses the model's own chat_template; "
                    + "this command has no model to read it from");
            default -> {
                if (template.startsWith(NAMED)) {
                    throw new IllegalArgumentException("template: " + template + " is one of the model's named "
                            + "templates; this command has no model to read it from");
                }
                yield ChatTemplate.byName(template, bosId, eosId);
            }
        };
    }

    /**
     * The chat template for a model's tokenizer: auto is the model's own chat_template when its chat_template.jinja or
     * tokenizer_config.json has one (run by the built-in renderer where it is the Jinja mixtune writes for a built-in template, which gives
     * the same ids), else mistral; hf demands the model's own.
     *
     * @throws IllegalArgumentException for hf when the model has no chat_template, naming the file
     */
    public ChatTemplate chatTemplate(SampleCache.TokenizerFile tokenizer) {
        if (template.startsWith(NAMED)) {
            return namedTemplate(tokenizer, template.substring(NAMED.length()));
        }
        if (!template.equals("auto") && !template.equals("hf")) {
            return chatTemplate(tokenizer.bosId(), tokenizer.eosId());
        }
        String noDefault = tokenizer.noDefaultTemplate();
        if (noDefault != null) {
            throw new IllegalArgumentException("template: " + template + ": " + noDefault + ": set data.template: "
                    + "hf:NAME");
        }
        JinjaChatTemplate own = tokenizer.chatTemplate();
        if (own == null) {
            if (template.equals("hf")) {
                throw new IllegalArgumentException("template: hf uses the model's own chat_template, but "
                        + tokenizer.configName() + (tokenizer.config() == null ? " does not exist" : " has none")
                        + " and there is no " + tokenizer.templateName() + " (use template: auto, mistral or chatml, "
                        + "or add the model's tokenizer_config.json or chat_template.jinja)");
            }
            return new MistralTemplate(tokenizer.bosId(), tokenizer.eosId());
        }
        if (template.equals("auto") && own.source().equals(MistralTemplate.JINJA)) {
            // its bos_token null: transformers renders JINJA's {{ bos_token }} as nothing, whatever config.json's id
            return new MistralTemplate(own.bosToken() == null ? TextTokenizer.NO_BOS : tokenizer.bosId(),
                    tokenizer.eosId());
        }
        return new HfChatTemplate(own, tokenizer.bosId(), tokenizer.eosId());
    }

    /**
     * hf:NAME: the model's template NAME. Where transformers is given a name its dict lacks it renders the name
     * itself as a template; mixtune refuses it, listing the names.
     */
    private static ChatTemplate namedTemplate(SampleCache.TokenizerFile tokenizer, String name) {
        Map<String, JinjaChatTemplate> named = tokenizer.namedTemplates();
        if (named.isEmpty()) {
            throw new IllegalArgumentException("template: " + NAMED + name + ": the model has no named chat templates "
                    + "(no " + tokenizer.templateDir() + "/*.jinja, no list in tokenizer_config.json): use template: hf "
                    + "for its one template");
        }
        JinjaChatTemplate chosen = named.get(name);
        if (chosen == null) {
            throw new IllegalArgumentException("template: " + NAMED + name + ": the model has no chat template named \""
                    + name + "\": its templates are " + List.copyOf(named.keySet()));
        }
        return new HfChatTemplate(chosen, tokenizer.bosId(), tokenizer.eosId());
    }
}
