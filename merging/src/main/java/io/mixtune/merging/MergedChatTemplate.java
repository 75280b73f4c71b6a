package io.mixtune.merging;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.lora.adapter.AdapterMerge;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * mergekit's {@code chat_template} (merge.py _set_chat_template): {@code auto} takes the template most of the inputs
 * have, a bundled template's name gives its text, else the key is a Jinja template itself. The merged tokenizer
 * carries it as transformers 5's save_pretrained writes a tokenizer's template, which is how mergekit writes it:
 * chat_template.jinja, and no chat_template in tokenizer_config.json.
 */
final class MergedChatTemplate {
    static final String AUTO = "auto";
    static final String JINJA_FILE = "chat_template.jinja";
    private static final String TOKENIZER_CONFIG = CompanionFiles.TOKENIZER_CONFIG;
    private static final String LEGACY_JSON = "chat_template.json";
    /**
     * The names mergekit takes for its bundled templates (mergekit/_data/chat_templates, looked up by merge.py
     * _set_chat_template before a literal is checked). mixtune ships its own text for each
     * (resources chat_templates/NAME.jinja), written to render what mergekit's renders rather than copied from its
     * LGPL-3.0 files: BundledChatTemplatesTest and interop's test_bundled_chat_templates.py compare the two on the
     * conversations of bundled_chat_templates.json, rendered from mergekit's files by
     * make_bundled_template_goldens.py.
     */
    static final Set<String> MERGEKIT_BUNDLED = Set.of("alpaca", "chatml", "exaone", "llama3", "mistral");
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private MergedChatTemplate() {}

    /**
     * What mergekit checks before merging: auto, a bundled template's name, or text that can be a template (20
     * characters or more, with a '{').
     */
    static void requireValid(String chatTemplate) {
        if (chatTemplate == null || chatTemplate.equals(AUTO) || MERGEKIT_BUNDLED.contains(chatTemplate)) {
            return;
        }
        if (chatTemplate.length() < 20 || !chatTemplate.contains("{")) {
            throw new IllegalArgumentException("chat_template must be auto, one of mergekit's bundled templates ("
                    + String.join(", ", new TreeSet<>(MERGEKIT_BUNDLED)) + ") or a Jinja template (20 characters or"
                    + " more, with a '{'), got '" + chatTemplate + "'");
        }
    }

    /** mixtune's text of the bundled template {@code name}, which renders as mergekit's file of that name. */
    static String bundled(String name) {
        try (InputStream in = MergedChatTemplate.class.getResourceAsStream("chat_templates/" + name + ".jinja")) {
            if (in == null) {
                throw new IllegalStateException("the bundled chat template " + name + " is missing from the build");
            }
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read the bundled chat template " + name, e);
        }
    }

    /**
     * The template the merge writes, settled before any tensor is written so that nothing fails once the merge has
     * run: the tokenizer files {@code tokenizerDonors} give must exist to carry it and their tokenizer_config.json be
     * JSON, and with auto every input's template is read. Null without chat_template, or when auto finds none.
     *
     * @param inputs the resolved inputs, base first, that auto counts
     * @throws IllegalArgumentException naming chat_template and what is missing or unreadable
     */
    static String settle(String chatTemplate, List<Path> inputs, List<Path> tokenizerDonors) {
        if (chatTemplate == null) {
            return null;
        }
        Map<String, Path> files = AdapterMerge.tokenizerSources(tokenizerDonors);
        if (tokenizerDonors.stream().noneMatch(CompanionFiles::hasTokenizer)) {
            // mergekit warns ("Chat template specified but no tokenizer found") and saves no template; mixtune
            // refuses a setting it would not apply.
            throw new IllegalArgumentException("chat_template is given, but none of " + tokenizerDonors + ", whose"
                    + " tokenizer the merge carries, has tokenizer files to carry it (tokenizer_config.json,"
                    + " tokenizer.json or tokenizer.model)");
        }
        if (files.containsKey(TOKENIZER_CONFIG) && !(readJson(files.get(TOKENIZER_CONFIG).resolve(TOKENIZER_CONFIG))
                instanceof ObjectNode)) {
            throw new IllegalArgumentException(files.get(TOKENIZER_CONFIG).resolve(TOKENIZER_CONFIG) + ": not a JSON"
                    + " object, so chat_template cannot be written into the tokenizer it belongs to");
        }
        return resolve(chatTemplate, inputs);
    }

    /**
     * The template to write: a bundled one's text, the given one, or with auto the one most inputs have (each
     * stripped, as mergekit strips them; a tie goes to the input listed first, where mergekit's order is a set's);
     * null when auto finds none.
     */
    private static String resolve(String chatTemplate, List<Path> inputsInOrder) {
        if (MERGEKIT_BUNDLED.contains(chatTemplate)) {
            return bundled(chatTemplate);
        }
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
                    JsonNode template = readJson(dir.resolve(file)).path("chat_template");
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

    /** A JSON file the template is read from or written into; one that is not JSON is the input's fault. */
    private static JsonNode readJson(Path file) {
        try {
            return JSON.readTree(file.toFile());
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException(file + ": not valid JSON, so chat_template cannot use it: "
                    + e.getOriginalMessage());
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": cannot be read: " + e.getMessage(), e);
        }
    }

    /**
     * Writes {@code template} into the tokenizer files copied to {@code out}: chat_template.jinja holds it, and the
     * templates the copied files held otherwise (tokenizer_config.json's key, chat_template.json) are removed.
     */
    static void write(Path out, String template) {
        Path config = out.resolve(TOKENIZER_CONFIG);
        if (!CompanionFiles.hasTokenizer(out)) {
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

    /** The inputs mergekit's auto looks at (referenced_models): the base, then the models. */
    static List<Path> inputs(MergeConfig config) {
        List<Path> inputs = new ArrayList<>();
        if (config.baseModel() != null) {
            inputs.add(config.baseModel());
        }
        config.models().forEach(model -> inputs.add(model.model()));
        return inputs;
    }
}
