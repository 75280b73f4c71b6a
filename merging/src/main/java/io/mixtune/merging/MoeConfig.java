package io.mixtune.merging;

import com.fasterxml.jackson.annotation.JsonCreator;
import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.annotation.JsonValue;
import io.mixtune.model.safetensors.DType;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Objects;

/**
 * What {@code mixtune merge-moe} builds, as mergekit-moe's YAML says it (mergekit/moe/config.py MoEMergeConfig and
 * Expert, one key per component):
 * <pre>
 *   base_model: base/                 # attention, norms, embeddings and lm_head come from it; also the tokenizer
 *   gate_mode: hidden                 # hidden (default), cheap_embed, random, uniform_random
 *   dtype: bfloat16                   # default: the base's
 *   experts_per_token: 2              # Mixtral's num_experts_per_tok
 *   experts:
 *     - source_model: math/           # or BASE+ADAPTER: a PEFT LoRA folded into BASE first (mergekit's model+lora)
 *       positive_prompts: ["Solve"]   # hidden and cheap_embed: what this expert should get
 *       negative_prompts: ["Write"]   # optional: what it should not
 *       noise_scale: 0.01             # optional: Gaussian noise of this std added to the expert's weights
 *       residual_scale: 0.5           # optional: scales the expert's down_proj (w2)
 * </pre>
 * Checked here as mergekit's is_bad_config checks it; the models themselves are checked by {@link MoeMerge}.
 */
@JsonInclude(JsonInclude.Include.NON_NULL)
public record MoeConfig(
        @JsonProperty("base_model") ModelReference baseModel,
        @JsonProperty("experts") List<Expert> experts,
        @JsonProperty("gate_mode") GateMode gateMode,
        @JsonProperty("dtype") DType dtype,
        @JsonProperty("experts_per_token") Integer expertsPerToken) {

    /** mergekit-moe's default experts_per_token (config.py). */
    public static final int DEFAULT_EXPERTS_PER_TOKEN = 2;

    public MoeConfig {
        if (baseModel == null) {
            throw new IllegalArgumentException("base_model is missing: the model whose attention, norms and embeddings"
                    + " the mixture keeps");
        }
        if (experts == null || experts.isEmpty()) {
            throw new IllegalArgumentException("experts is missing: list at least experts_per_token models as"
                    + " {source_model: ...}");
        }
        gateMode = gateMode == null ? GateMode.HIDDEN : gateMode;
        expertsPerToken = expertsPerToken == null ? DEFAULT_EXPERTS_PER_TOKEN : expertsPerToken;
        experts = List.copyOf(experts);
        if (expertsPerToken < 1) {
            throw new IllegalArgumentException("experts_per_token must be 1 or more, got " + expertsPerToken);
        }
        if (experts.size() < expertsPerToken) {
            throw new IllegalArgumentException("experts_per_token is " + expertsPerToken + " but experts lists only "
                    + experts.size() + ": list at least as many experts as experts_per_token");
        }
        if (gateMode.usesPrompts()) {
            for (int i = 0; i < experts.size(); i++) {
                if (experts.get(i).positivePrompts().isEmpty()) {
                    throw new IllegalArgumentException("experts[" + i + "] (" + experts.get(i).sourceModel()
                            + ") has no positive_prompts, which gate_mode " + gateMode + " routes by: give one or"
                            + " more prompts of what this expert should get, or use gate_mode random");
                }
            }
            // mergekit's is_bad_config: identical prompts give identical router rows, so no routing at all.
            Expert first = experts.get(0);
            if (experts.size() > 1 && experts.stream().allMatch(e -> e.positivePrompts().equals(first.positivePrompts())
                    && e.negativePrompts().equals(first.negativePrompts()))) {
                throw new IllegalArgumentException("experts: positive_prompts and negative_prompts are identical for"
                        + " every expert, which gives every expert the same router row: give each expert prompts of"
                        + " what should be routed to it");
            }
        }
    }

    /** mergekit's gate modes (mergekit/moe/router.py get_gate_params). */
    public enum GateMode {
        /** The base's hidden state entering each layer at the prompts' last token (mergekit's "hidden"). */
        HIDDEN("hidden"),
        /** The prompts' token embeddings, summed; the same row for every layer. */
        CHEAP_EMBED("cheap_embed"),
        /** Standard normal entries (torch.randn). */
        RANDOM("random"),
        /** Uniform in [-1/sqrt(hidden), 1/sqrt(hidden)], torch.nn.Linear's initialisation. */
        UNIFORM_RANDOM("uniform_random");

        private final String yamlName;

        GateMode(String yamlName) {
            this.yamlName = yamlName;
        }

        boolean usesPrompts() {
            return this == HIDDEN || this == CHEAP_EMBED;
        }

        @JsonCreator
        public static GateMode parse(String name) {
            String key = name.trim().toLowerCase(Locale.ROOT);
            if (key.equals("hidden_last")) {
                return HIDDEN; // router.py: every hidden mode but hidden_avg takes the last token
            }
            if (key.equals("hidden_avg")) {
                throw new IllegalArgumentException("gate_mode hidden_avg is not supported yet: mergekit averages over"
                        + " the padded batch's positions, pads included, so its rows depend on how the prompts pad;"
                        + " use hidden (the last token's state)");
            }
            for (GateMode mode : values()) {
                if (mode.yamlName.equals(key)) {
                    return mode;
                }
            }
            throw new IllegalArgumentException("gate_mode must be one of hidden, cheap_embed, random, uniform_random,"
                    + " got '" + name + "'");
        }

        @JsonValue
        @Override
        public String toString() {
            return yamlName;
        }
    }

    /**
     * A model as mergekit names it (common.py ModelReference.parse): {@code PATH}, or {@code PATH+ADAPTER}, a PEFT LoRA
     * adapter folded into PATH before use (W + scale B A, PEFT's merge_and_unload).
     */
    public record ModelReference(Path model, Path lora) {
        public ModelReference {
            Objects.requireNonNull(model, "model");
        }

        @JsonCreator
        public static ModelReference parse(String text) {
            String[] parts = text.split("\\+", -1);
            if (parts.length > 2 || Arrays.stream(parts).anyMatch(p -> p.isBlank())) {
                throw new IllegalArgumentException("a model is PATH or PATH+ADAPTER (a PEFT LoRA folded into PATH),"
                        + " got '" + text + "'");
            }
            return new ModelReference(Path.of(parts[0].trim()), parts.length == 2 ? Path.of(parts[1].trim()) : null);
        }

        @JsonValue
        @Override
        public String toString() {
            return lora == null ? model.toString() : model + "+" + lora;
        }

        boolean sameAs(ModelReference other) {
            return MergeConfig.samePath(model, other.model) && (lora == null ? other.lora == null
                    : other.lora != null && MergeConfig.samePath(lora, other.lora));
        }
    }

    /** One expert: its MLP weights become expert {@code j} of every layer (mergekit/moe/config.py Expert). */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record Expert(
            @JsonProperty("source_model") ModelReference sourceModel,
            @JsonProperty("positive_prompts") List<String> positivePrompts,
            @JsonProperty("negative_prompts") List<String> negativePrompts,
            @JsonProperty("noise_scale") Double noiseScale,
            @JsonProperty("residual_scale") Double residualScale) {
        public Expert {
            if (sourceModel == null) {
                throw new IllegalArgumentException("source_model is missing: each expert names a model directory");
            }
            positivePrompts = positivePrompts == null ? List.of() : List.copyOf(positivePrompts);
            negativePrompts = negativePrompts == null ? List.of() : List.copyOf(negativePrompts);
            if (noiseScale != null && !(noiseScale >= 0 && Double.isFinite(noiseScale))) {
                throw new IllegalArgumentException("noise_scale must be a standard deviation (0 or more), got "
                        + noiseScale);
            }
            if (residualScale != null && !Double.isFinite(residualScale)) {
                throw new IllegalArgumentException("residual_scale must be a number, got " + residualScale);
            }
        }

        public static Expert of(ModelReference model, List<String> positive, List<String> negative) {
            return new Expert(model, positive, negative, null, null);
        }
    }
}
