package io.mixtune.merging;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * mergekit's {@code chat_template} (merge.py _set_chat_template): {@code auto} takes the template most of the inputs
 * have, else the key is a Jinja template itself. The merged tokenizer carries it as transformers 5's save_pretrained
 * writes a tokenizer's template, which is how mergekit writes it: chat_template.jinja, and no chat_template in
 * tokenizer_config.json.
 */
final class MergedChatTemplate {
    static final String AUTO = "auto";
    static final String JINJA_FILE = "chat_template.jinja";
    private static final String TOKENIZER_CONFIG = "tokenizer_config.json";
    private static final String LEGACY_JSON = "chat_template.json";
    /** The templates mergekit bundles (mergekit/_data/chat_templates), taken by name. */
    static final Set<String> MERGEKIT_BUNDLED = Set.of("alpaca", "chatml", "exaone", "llama3", "mistral");
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private MergedChatTemplate() {}

    /** What mergekit checks before merging: auto, or text that can be a template (20 characters or more, with a '{'). */
    static void requireValid(String chatTemplate) {
        if (chatTemplate == null || chatTemplate.equals(AUTO)) {
            return;
        }
        if (MERGEKIT_BUNDLED.contains(chatTemplate)) {
            throw new IllegalArgumentException("chat_template '" + chatTemplate + "' names one of mergekit's bundled"
                    + " templates (" + String.join(", ", new java.util.TreeSet<>(MERGEKIT_BUNDLED)) + "), which is not"
                    + " supported yet: those files are LGPL-3.0 and mixtune does not ship them; give the template's"
                    + " Jinja text, or auto");
        }
        if (chatTemplate.length() < 20 || !chatTemplate.contains("{")) {
            throw new IllegalArgumentException("chat_template must be auto or a Jinja template (20 characters or more,"
                    + " with a '{'), got '" + chatTemplate + "'");
        }
    }

    /**
     * The template to write: the given one, or with auto the one most inputs have (each stripped, as mergekit strips
     * them; a tie goes to the input listed first, where mergekit's order is a set's); null when auto finds none.
     */
    static String resolve(String chatTemplate, List<Path> inputsInOrder) {
        if (!AUTO.equals(chatTemplate)) {
            return chatTemplate;
        }
        Map<String, Integer> counts = new LinkedHashMap<>();
        for (Path input : inputsInOrder) {
            String template = of(input);
            if (template != null && !template.isBlank()) {
                counts.merge(template.strip(), 1, Integer::sum);
            }
        }
        String best = null;
        for (Map.Entry<String, Integer> entry : counts.entrySet()) {
            if (best == null || entry.getValue() > counts.get(best)) {
                best = entry.getKey();
            }
        }
        return best;
    }

    /**
     * A model directory's template as transformers loads it: chat_template.jinja, else chat_template.json, else
     * tokenizer_config.json's chat_template (of a list of named templates, the one named default); null if none.
     */
    static String of(Path dir) {
        try {
            if (Files.isRegularFile(dir.resolve(JINJA_FILE))) {
                return Files.readString(dir.resolve(JINJA_FILE));
            }
            for (String file : List.of(LEGACY_JSON, TOKENIZER_CONFIG)) {
                if (Files.isRegularFile(dir.resolve(file))) {
                    JsonNode template = JSON.readTree(dir.resolve(file).toFile()).path("chat_template");
                    if (template.isTextual()) {
                        return template.asText();
                    }
                    for (JsonNode named : template.isArray() ? template : JSON.createArrayNode()) {
                        if ("default".equals(named.path("name").asText())) {
                            return named.path("template").asText();
                        }
                    }
                    if (!template.isMissingNode()) {
                        return null;
                    }
                }
            }
            return null;
        } catch (IOException e) {
            throw new UncheckedIOException(dir + ": cannot read its chat template: " + e.getMessage(), e);
        }
    }

    /**
     * Checked before anything is written: some input has tokenizer files to carry the template (mergekit warns and
     * saves none; mixtune refuses, as for every setting it would not apply).
     */
    static void requireTokenizerAmong(List<Path> inputs) {
        for (Path input : inputs) {
            if (hasTokenizer(input)) {
                return;
            }
        }
        throw new IllegalArgumentException("chat_template is given, but no input has tokenizer files to carry it"
                + " (tokenizer_config.json, tokenizer.json or tokenizer.model)");
    }

    private static boolean hasTokenizer(Path dir) {
        return Files.isRegularFile(dir.resolve(TOKENIZER_CONFIG)) || Files.isRegularFile(dir.resolve("tokenizer.json"))
                || Files.isRegularFile(dir.resolve("tokenizer.model"));
    }

    /**
     * Writes {@code template} into the tokenizer files copied to {@code out}: chat_template.jinja holds it, and the
     * templates the copied files held otherwise (tokenizer_config.json's key, chat_template.json) are removed.
     */
    static void write(Path out, String template) {
        Path config = out.resolve(TOKENIZER_CONFIG);
        if (!hasTokenizer(out)) {
            throw new IllegalStateException(out + ": no tokenizer files were copied to carry the chat template");
        }
        try {
            if (Files.isRegularFile(config)) {
                JsonNode tree = JSON.readTree(config.toFile());
                if (tree instanceof ObjectNode object && object.has("chat_template")) {
                    object.remove("chat_template");
                    Files.writeString(config, JSON.writeValueAsString(object) + "\n");
                }
            }
            Files.deleteIfExists(out.resolve(LEGACY_JSON));
            Files.writeString(out.resolve(JINJA_FILE), template);
        } catch (IOException e) {
            throw new UncheckedIOException(out + ": cannot write the chat template: " + e.getMessage(), e);
        }
    }

    /** The inputs mergekit's auto looks at: the base, then the models. */
    static List<Path> inputs(MergeConfig config) {
        List<Path> inputs = new ArrayList<>();
        if (config.baseModel() != null) {
            inputs.add(config.baseModel());
        }
        config.models().forEach(model -> inputs.add(model.model()));
        return inputs;
    }
}
