package io.mixtune.merging;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;

/**
 * Reads mergekit-moe's YAML into a {@link MoeConfig}, with {@link MergeYaml}'s messages ({@code file:line:column: key:
 * problem}, the nearest valid key for a typo). Keys mergekit-moe has and mixtune does not take are refused by name with
 * what to do; keys mergekit-moe's pydantic model would ignore silently are refused as unknown.
 */
public final class MoeYaml {
    /** The config as given, written next to the mixture as mergekit-moe writes it (scripts/moe.py main). */
    public static final String WRITTEN_FILE = "mergekit_moe_config.yml";

    /** mergekit-moe keys mixtune refuses, and why / what to do instead. */
    private static final Map<String, String> REFUSED = Map.of(
            "shared_experts", "shared experts are for the qwen and deepseek outputs; mixtune writes Mixtral, which has"
                    + " none (mergekit's Mixtral output refuses them too): list the model under experts instead",
            "tokenizer", "mergekit-moe has no tokenizer key (its config ignores it): the mixture carries base_model's"
                    + " tokenizer files and chat template; remove the key",
            "tokenizer_source", "mergekit-moe has no tokenizer_source key (its config ignores it): the mixture carries"
                    + " base_model's tokenizer files and chat template; remove the key",
            "chat_template", "mergekit-moe has no chat_template key (its config ignores it): the mixture carries"
                    + " base_model's chat template; remove the key and edit the output's tokenizer_config.json",
            "merge_method", "this is mergekit-yaml's key, not mergekit-moe's: run mixtune merge with this file",
            "models", "this is mergekit-yaml's key, not mergekit-moe's (experts, each with source_model): run mixtune"
                    + " merge with this file, or list the models under experts",
            "slices", "this is mergekit-yaml's key, not mergekit-moe's: run mixtune merge with this file");

    private MoeYaml() {}

    public static MoeConfig read(Path file) {
        String text = text(file);
        try {
            JsonNode tree = MergeYaml.MAPPER.readTree(text);
            if (tree == null || !tree.isObject()) {
                throw new IllegalArgumentException(file + ": expected a mapping with base_model, gate_mode and"
                        + " experts");
            }
            for (Map.Entry<String, String> refused : REFUSED.entrySet()) {
                if (tree.has(refused.getKey())) {
                    throw new IllegalArgumentException(file + MergeYaml.where(text, refused.getKey()) + ": "
                            + refused.getKey() + ": " + refused.getValue());
                }
            }
            JsonNode architecture = tree.path("architecture");
            if (!architecture.isMissingNode()) {
                // select_output_arch keeps the outputs whose name starts with the value, case aside.
                String name = architecture.asText("").toLowerCase(Locale.ROOT);
                if (name.isEmpty() || !"mixtral".startsWith(name)) {
                    throw new IllegalArgumentException(file + MergeYaml.where(text, "architecture")
                            + ": architecture '" + architecture.asText() + "': mixtune writes Mixtral only (the"
                            + " qwen, qwen3 and deepseek outputs are mergekit's alone): remove the key or say"
                            + " mixtral");
                }
                ((com.fasterxml.jackson.databind.node.ObjectNode) tree).remove("architecture");
                MergeYaml.requireKnownKeys(file, text, tree, MoeConfig.class, "");
                return MergeYaml.MAPPER.treeToValue(tree, MoeConfig.class);
            }
            MergeYaml.requireKnownKeys(file, text, tree, MoeConfig.class, "");
            // Parsed from the text itself, so that a value's problem carries its line.
            return MergeYaml.MAPPER.readValue(text, MoeConfig.class);
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException(MergeYaml.describe(file, text, e), e);
        }
    }

    static String text(Path file) {
        try {
            return Files.readString(file);
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException(file + ": no such mergekit-moe config file");
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": cannot be read: " + e.getMessage(), e);
        }
    }
}
