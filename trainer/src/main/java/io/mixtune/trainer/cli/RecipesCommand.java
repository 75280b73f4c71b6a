package io.mixtune.trainer.cli;

import io.mixtune.model.checkpoint.PathOverlap;
import io.mixtune.trainer.Refusal;
import io.mixtune.trainer.recipe.AxolotlImport;
import io.mixtune.trainer.recipe.BundledRecipes;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * {@code mixtune recipes list | show NAME | copy NAME DEST | import AXOLOTL.yml}: the ready recipes packed into the jar,
 * to read and to copy out as the start of one's own, and axolotl configs turned into recipes.
 */
final class RecipesCommand {
    private RecipesCommand() {}

    /** `mixtune recipes list`: name and one-line description of each ready recipe. */
    static final class ListRecipes implements Command {
        @Override
        public String name() {
            return "recipes list";
        }

        @Override
        public String summary() {
            return "list the ready recipes in the jar, each with its description (the first sentence of its comment)";
        }

        @Override
        public String usage() {
            return "";
        }

        @Override
        public Options options() {
            return new Options();
        }

        @Override
        public int run(CommandLine line, PrintStream out) {
            List<BundledRecipes.Entry> entries = BundledRecipes.list();
            int width = entries.stream().mapToInt(e -> e.name().length()).max().orElse(0);
            for (BundledRecipes.Entry entry : entries) {
                List<String> lines = wrap(entry.description(), Math.max(40, LINE_WIDTH - width - 2));
                out.printf("%-" + width + "s  %s%n", entry.name(), lines.isEmpty() ? "" : lines.get(0));
                for (String more : lines.subList(Math.min(1, lines.size()), lines.size())) {
                    out.printf("%-" + width + "s  %s%n", "", more);
                }
            }
            return Mixtune.OK;
        }
    }

    /** The width help text is wrapped to (as `mixtune <command> --help` is). */
    static final int LINE_WIDTH = 100;

    /** Words in lines of at most {@code width} characters (a longer word gets a line of its own). */
    static List<String> wrap(String text, int width) {
        List<String> lines = new java.util.ArrayList<>();
        StringBuilder line = new StringBuilder();
        for (String word : text.split("\\s+")) {
            if (word.isEmpty()) {
                continue;
            }
            if (line.length() > 0 && line.length() + 1 + word.length() > width) {
                lines.add(line.toString());
                line.setLength(0);
            }
            line.append(line.length() == 0 ? "" : " ").append(word);
        }
        if (line.length() > 0) {
            lines.add(line.toString());
        }
        return lines;
    }

    /** `mixtune recipes show NAME`: the recipe as written, comments and all. */
    static final class Show implements Command {
        @Override
        public String name() {
            return "recipes show";
        }

        @Override
        public String summary() {
            return "print a ready recipe as written, with the comments that say where each setting comes from";
        }

        @Override
        public String usage() {
            return "NAME   (a name from mixtune recipes list)";
        }

        @Override
        public Options options() {
            return new Options();
        }

        @Override
        public List<String> arguments() {
            return List.of("NAME");
        }

        @Override
        public int run(CommandLine line, PrintStream out) {
            out.print(text(line.getArgList().get(0)));
            return Mixtune.OK;
        }
    }

    /** `mixtune recipes copy NAME DEST`: the recipe written out to edit; an existing file is kept unless --force. */
    static final class Copy implements Command {
        @Override
        public String name() {
            return "recipes copy";
        }

        @Override
        public String summary() {
            return "copy a ready recipe to a file (or into a directory) to edit; --force overwrites";
        }

        @Override
        public String usage() {
            return "NAME DEST [--force]";
        }

        @Override
        public Options options() {
            return new Options().addOption(Mixtune.option("force", null, "overwrite DEST if it exists"));
        }

        @Override
        public List<String> arguments() {
            return List.of("NAME", "DEST");
        }

        @Override
        public int run(CommandLine line, PrintStream out) throws IOException {
            String name = line.getArgList().get(0);
            String text = text(name);
            Path dest = Path.of(line.getArgList().get(1));
            if (Files.isDirectory(dest)) {
                dest = dest.resolve(BundledRecipes.file(name).getFileName().toString());
            }
            if (Files.exists(dest) && !line.hasOption("force")) {
                throw new Refusal(dest + " already exists: not overwritten (--force replaces it)");
            }
            Path parent = dest.toAbsolutePath().getParent();
            if (parent != null) {
                Files.createDirectories(parent);
            }
            Files.writeString(dest, text, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                    StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE);
            out.println("wrote " + dest + " (ready recipe " + BundledRecipes.file(name).getFileName()
                    + "); check it with: mixtune validate --recipe " + dest);
            return Mixtune.OK;
        }
    }

    /**
     * `mixtune recipes import AXOLOTL.yml [--out R.yaml]`: an axolotl config as a recipe, printed or written, with every
     * key that did not map listed (in the recipe's header, and on the terminal when written to a file).
     */
    static final class Import implements Command {
        @Override
        public String name() {
            return "recipes import";
        }

        @Override
        public String summary() {
            return "turn an axolotl config into a recipe (printed, or written with --out) and list every key it could"
                    + " not map";
        }

        @Override
        public String usage() {
            return "AXOLOTL.yml [--out RECIPE.yaml [--force]]";
        }

        @Override
        public Options options() {
            return new Options()
                    .addOption(Mixtune.option("out", "FILE", "write the recipe there (default: print it)"))
                    .addOption(Mixtune.option("force", null, "overwrite --out if it exists"));
        }

        @Override
        public List<String> arguments() {
            return List.of("AXOLOTL.yml");
        }

        @Override
        public int run(CommandLine line, PrintStream out) throws IOException {
            Path source = Path.of(line.getArgList().get(0));
            if (!Files.isRegularFile(source)) {
                throw new UsageException(source + ": no such axolotl config file");
            }
            AxolotlImport.Result imported = AxolotlImport.read(source);
            if (!line.hasOption("out")) {
                out.print(imported.recipe());
                return Mixtune.OK;
            }
            Path dest = Path.of(line.getOptionValue("out"));
            if (PathOverlap.of(dest, source) == PathOverlap.SAME) {
                throw new Refusal("--out " + dest + " is the axolotl config being imported: the recipe would replace "
                        + "it; choose another file");
            }
            if (Files.exists(dest) && !line.hasOption("force")) {
                throw new Refusal(dest + " already exists: not overwritten (--force replaces it)");
            }
            Path parent = dest.toAbsolutePath().getParent();
            if (parent != null) {
                Files.createDirectories(parent);
            }
            Files.writeString(dest, imported.recipe(), StandardCharsets.UTF_8);
            out.println("wrote " + dest + ": " + imported.values().size() + " settings from " + source + "; check it"
                    + " with: mixtune validate --recipe " + dest);
            out.println(imported.unmapped().isEmpty() ? "every key mapped" : "not mapped (" + imported.unmapped()
                    .size() + " keys):");
            imported.unmapped().forEach(problem -> out.println("  " + problem));
            imported.notes().forEach(note -> out.println("note: " + note));
            return Mixtune.OK;
        }
    }

    /** The recipe's text; an unknown name is a usage error that lists the known ones. */
    private static String text(String name) {
        try {
            return BundledRecipes.text(name);
        } catch (IllegalArgumentException e) {
            throw new UsageException(e.getMessage());
        }
    }
}
