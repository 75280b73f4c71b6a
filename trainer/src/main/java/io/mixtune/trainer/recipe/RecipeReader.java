package io.mixtune.trainer.recipe;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.PropertyNamingStrategies;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import com.fasterxml.jackson.dataformat.yaml.YAMLGenerator;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.model.config.ModelPreset;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.Reader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Reads a recipe: the bundled defaults, then the files it includes (in order), then the recipe, then each
 * {@code --set key.path=value}; binds the result onto {@link Recipe} and checks that the files and the preset it names
 * exist. Every error names the file and line the offending value came from.
 *
 * <p>model.path and model.preset are one choice: a layer that names one drops the other from the layers beneath, so
 * {@code --set model.path=DIR} trains a recipe written for a preset on the real checkpoint.
 */
public final class RecipeReader {
    /** Defaults under every recipe; a classpath resource, edited in {@code configs/}. */
    public static final String DEFAULTS = "configs/recipe-defaults.yaml";
    static final String INCLUDE = "include";

    private RecipeReader() {}

    /** A recipe and the tree it was bound from (what {@link #toYaml} writes as the resolved recipe). */
    public record Loaded(Recipe recipe, Path source) {}

    public static Loaded read(Path file, List<String> overrides) {
        if (!Files.isRegularFile(file)) {
            throw new RecipeException(file + ": no such recipe file");
        }
        YamlTree merged = overlay(resource(DEFAULTS), withIncludes(file, new ArrayList<>()));
        for (String assignment : overrides) {
            merged = overlay(merged, YamlTree.override(assignment));
        }
        merged.root.remove(INCLUDE);
        RecordBinder binder = new RecordBinder(merged);
        Recipe recipe = binder.bind(Recipe.class, merged.root, "");
        checkFiles(recipe, binder);
        return new Loaded(recipe, file);
    }

    /** A file with what it includes beneath it; includes resolve beside the file, then among the bundled configs. */
    private static YamlTree withIncludes(Path file, List<Path> chain) {
        Path normalized = file.toAbsolutePath().normalize();
        if (chain.contains(normalized)) {
            throw new RecipeException(file + ": includes itself through " + chain);
        }
        chain.add(normalized);
        YamlTree tree;
        try (Reader reader = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            tree = YamlTree.parse(reader, file.toString());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file + ": " + e.getMessage(), e);
        }
        JsonNode include = tree.root.get(INCLUDE);
        if (include == null || include.isNull()) {
            chain.remove(normalized);
            return tree;
        }
        List<JsonNode> names = new ArrayList<>();
        if (include.isArray()) {
            include.forEach(names::add);
        } else {
            names.add(include);
        }
        YamlTree base = YamlTree.empty();
        for (int i = 0; i < names.size(); i++) {
            JsonNode name = names.get(i);
            String path = include.isArray() ? INCLUDE + "[" + i + "]" : INCLUDE;
            if (!name.isTextual()) {
                throw new RecipeException(tree.originOf(path) + ": " + INCLUDE + ": expected a file name, got " + name);
            }
            Path beside = file.toAbsolutePath().getParent().resolve(name.asText());
            if (Files.isRegularFile(beside)) {
                base = overlay(base, withIncludes(beside, chain));
            } else if (RecipeReader.class.getClassLoader().getResource(name.asText()) != null) {
                base = overlay(base, resource(name.asText()));
            } else {
                throw new RecipeException(tree.originOf(path) + ": " + INCLUDE + ": no file " + beside
                        + " and no bundled config " + name.asText());
            }
        }
        chain.remove(normalized);
        tree.root.remove(INCLUDE);
        return overlay(base, tree);
    }

    /** {@code top} over {@code base}; where top names model.path but not model.preset (or the reverse), the other goes. */
    private static YamlTree overlay(YamlTree base, YamlTree top) {
        YamlTree merged = base.overlay(top);
        if (top.root.get("model") instanceof ObjectNode model && merged.root.get("model") instanceof ObjectNode result) {
            for (String[] choice : new String[][] {{"path", "preset"}, {"preset", "path"}}) {
                if (model.hasNonNull(choice[0]) && !model.has(choice[1])) {
                    result.putNull(choice[1]);
                }
            }
        }
        return merged;
    }

    private static YamlTree resource(String name) {
        try (InputStream in = RecipeReader.class.getClassLoader().getResourceAsStream(name)) {
            if (in == null) {
                throw new IllegalStateException("bundled " + name + " is missing from the jar");
            }
            return YamlTree.parse(new InputStreamReader(in, StandardCharsets.UTF_8), name);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static void checkFiles(Recipe recipe, RecordBinder binder) {
        if (recipe.model().preset() != null && !ModelPreset.NAMES.contains(recipe.model().preset())) {
            throw binder.error("model.preset", "no preset named \"" + recipe.model().preset() + "\"" + RecordBinder.nearest(
                    recipe.model().preset(), ModelPreset.NAMES) + ": expected one of " + ModelPreset.NAMES);
        }
        if (recipe.model().path() != null) {
            Path dir = Path.of(recipe.model().path());
            if (!Files.isRegularFile(dir.resolve("config.json"))) {
                throw binder.error("model.path", "no Hugging Face checkpoint at " + dir + " (config.json missing)");
            }
        }
        if (recipe.model().adapter() != null && !Files.isRegularFile(Path.of(recipe.model().adapter(),
                "adapter_config.json"))) {
            throw binder.error("model.adapter", "no PEFT adapter at " + recipe.model().adapter()
                    + " (adapter_config.json missing)");
        }
        checkFilesExist(recipe.data().files(), "data.files", binder);
        checkFilesExist(recipe.data().validationFiles(), "data.validation_files", binder);
    }

    private static void checkFilesExist(List<String> files, String key, RecordBinder binder) {
        for (int i = 0; i < files.size(); i++) {
            if (!Files.isRegularFile(DataConfig.file(files.get(i)))) {
                throw binder.error(key + "[" + i + "]", "no such file " + files.get(i) + " (paths are relative to the "
                        + "directory mixtune runs in: " + Path.of("").toAbsolutePath() + "; the jar also holds "
                        + "data/samples/)");
            }
        }
    }

    private static final ObjectMapper YAML_WRITER = new ObjectMapper(new YAMLFactory()
            .disable(YAMLGenerator.Feature.WRITE_DOC_START_MARKER)
            .enable(YAMLGenerator.Feature.MINIMIZE_QUOTES))
            .setPropertyNamingStrategy(PropertyNamingStrategies.SNAKE_CASE);

    /** The recipe as YAML with every default filled in: what a run writes next to its outputs. */
    public static String toYaml(Recipe recipe) {
        try {
            ObjectNode tree = YAML_WRITER.valueToTree(recipe);
            return YAML_WRITER.writeValueAsString(tree);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
