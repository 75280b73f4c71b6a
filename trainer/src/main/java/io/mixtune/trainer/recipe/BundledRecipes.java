package io.mixtune.trainer.recipe;

import io.mixtune.model.config.BundledFiles;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The ready recipes: the repository's {@code recipes/} folder, packed into the jar at every build (trainer/pom.xml), so
 * that a user with the jar alone can list them, read one and copy it out to edit. The configs they include and the
 * presets they name are bundled too (model/pom.xml), which is why a copied recipe validates from any directory.
 */
public final class BundledRecipes {
    public static final String FOLDER = "recipes";
    private static final String SUFFIX = ".yaml";

    private BundledRecipes() {}

    /**
     * @param name the file name without .yaml, what {@code mixtune recipes show} takes
     * @param description the recipe's first comment line
     */
    public record Entry(String name, String description) {}

    public static List<Entry> list() {
        List<Entry> entries = new ArrayList<>();
        for (String name : names()) {
            entries.add(new Entry(name, description(read(BundledFiles.find(FOLDER + "/" + name + SUFFIX).orElseThrow()))));
        }
        return entries;
    }

    /** The recipe's file inside the jar (or target/classes), for "quickstart", "quickstart.yaml" or "recipes/...". */
    public static Path file(String name) {
        String bare = name.startsWith(FOLDER + "/") ? name.substring(FOLDER.length() + 1) : name;
        bare = bare.endsWith(SUFFIX) ? bare.substring(0, bare.length() - SUFFIX.length()) : bare;
        List<String> names = names();
        if (!names.contains(bare)) {
            throw new IllegalArgumentException("no ready recipe named '" + name + "'" + RecordBinder.nearest(bare, names)
                    + ": expected one of " + names + " (mixtune recipes list)");
        }
        return BundledFiles.find(FOLDER + "/" + bare + SUFFIX).orElseThrow();
    }

    /** The recipe as written, comments included. */
    public static String text(String name) {
        return read(file(name));
    }

    private static List<String> names() {
        return BundledFiles.list(FOLDER).stream().filter(f -> f.endsWith(SUFFIX))
                .map(f -> f.substring(0, f.length() - SUFFIX.length())).toList();
    }

    private static String read(Path file) {
        try {
            return Files.readString(file, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read bundled " + file + ": " + e.getMessage(), e);
        }
    }

    /**
     * The first sentence of the recipe's opening comment, which every ready recipe writes as its description; whole,
     * though it may run over several comment lines.
     */
    static String description(String yaml) {
        StringBuilder opening = new StringBuilder();
        for (String line : yaml.lines().map(String::strip).dropWhile(line -> !line.startsWith("#")).toList()) {
            String text = line.replaceFirst("^#+\\s*", "");
            if (!line.startsWith("#") || text.isEmpty()) {
                break;
            }
            opening.append(opening.length() == 0 ? "" : " ").append(text);
        }
        Matcher end = SENTENCE_END.matcher(opening);
        return end.find() ? opening.substring(0, end.start() + 1) : opening.toString();
    }

    /** A full stop followed by a space or the end: "0.1" and "e.g" do not end a sentence; ". " does. */
    private static final Pattern SENTENCE_END = Pattern.compile("\\.(\\s|$)");
}
