package io.mixtune.trainer.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.data.batch.PackedRow;
import io.mixtune.data.batch.PackingStrategy;
import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.model.checkpoint.PathOverlap;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.chat.TemplateWarning;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.recipe.RecipeValueException;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * {@code mixtune data prepare} and {@code mixtune data preview}: a recipe's {@code data:} section tokenized into the
 * data cache that training reads, or shown sample by sample with the trained tokens marked.
 */
final class DataCommand {
    private static final String ANSI_TRAINED = "\u001B[1;32m";
    private static final String ANSI_SPECIAL = "\u001B[2m";
    private static final String ANSI_RESET = "\u001B[0m";

    private DataCommand() {}

    /** `mixtune data prepare`: tokenize once into the cache; training then reads it. */
    static final class Prepare implements Command {
        @Override
        public String name() {
            return "data prepare";
        }

        @Override
        public String summary() {
            return "tokenize a recipe's data into the cache training reads (a no-op when it is up to date)";
        }

        @Override
        public String usage() {
            return "--recipe R.yaml [--set key.path=value ...] [--cache-dir DIR]";
        }

        @Override
        public Options options() {
            return commonOptions();
        }

        @Override
        public int run(CommandLine line, PrintStream out) {
            RecipeReader.Loaded read = TrainCommand.readLoaded(line);
            Recipe recipe = read.recipe();
            SampleCache.Loaded loaded;
            try {
                loaded = load(recipe, line);
            } catch (RecipeValueException e) {
                throw read.locate(e); // at the line that set the key
            }
            out.println(describe(recipe, loaded));
            return Mixtune.OK;
        }
    }

    /** `mixtune data preview`: the first samples as text, trained tokens highlighted, and the data report. */
    static final class Preview implements Command {
        @Override
        public String name() {
            return "data preview";
        }

        @Override
        public String summary() {
            return "show the first training samples with their trained tokens highlighted, and the data report";
        }

        @Override
        public String usage() {
            return "--recipe R.yaml [--n 3] [--dump FILE.jsonl] [--color auto|always|never] [--set key.path=value ...] "
                    + "[--cache-dir DIR]";
        }

        @Override
        public Options options() {
            return commonOptions()
                    .addOption(Mixtune.option("n", "N", "how many samples, the first of the training set in file "
                            + "order (default 3)"))
                    .addOption(Mixtune.option("dump", "FILE", "write those samples to FILE as JSONL: input_ids, "
                            + "labels (-100 untrained), position_ids; with packing, then the rows they pack into"))
                    .addOption(Mixtune.option("color", "WHEN", "highlight trained tokens in colour: auto (when "
                            + "stdout is a terminal, the default), always, never (then they are marked ⟦ ⟧)"));
        }

        @Override
        public int run(CommandLine line, PrintStream out) throws IOException {
            int n = Mixtune.intOption(line, "n", 3);
            if (n < 0) {
                throw new UsageException("--n must be >= 0, got " + n);
            }
            boolean colour = switch (line.getOptionValue("color", "auto")) {
                case "auto" -> System.console() != null && out == System.out;
                case "always" -> true;
                case "never" -> false;
                default -> throw new UsageException("--color expects auto, always or never, got '"
                        + line.getOptionValue("color") + "'");
            };
            RecipeReader.Loaded read = TrainCommand.readLoaded(line);
            Recipe recipe = read.recipe();
            DataConfig data = recipe.data();
            if (line.hasOption("dump")) {
                Path dump = Path.of(line.getOptionValue("dump"));
                if (PathOverlap.of(dump, read.source()) == PathOverlap.SAME) {
                    throw new UsageException("--dump " + dump + " is an input of the recipe (" + read.source()
                            + "): the dump would replace it; choose another file");
                }
                recipe.inputs().forEach((key, input) -> {
                    PathOverlap overlap = PathOverlap.of(dump, input.path());
                    if (overlap == PathOverlap.SAME || overlap == PathOverlap.OUT_INSIDE_INPUT) {
                        throw new UsageException("--dump " + dump + (overlap == PathOverlap.SAME ? " is an input"
                                : " is inside an input") + " of the recipe (" + key + " " + input.path() + "): the "
                                + "dump would write over it; choose another file");
                    }
                });
            }
            SampleCache.Loaded loaded;
            try {
                loaded = load(recipe, line);
            } catch (RecipeValueException e) {
                throw read.locate(e);
            }
            TokenizerFile tokenizerFile = TrainingData.tokenizer(recipe);
            List<TokenizedSample> train = loaded.dataset().train();
            List<TokenizedSample> shown = train.subList(0, Math.min(n, train.size()));
            try (TextTokenizer tokenizer = tokenizerFile.open()) {
                for (int i = 0; i < shown.size(); i++) {
                    TokenizedSample sample = shown.get(i);
                    out.printf(Locale.ROOT, "--- sample %d of %,d (%s): %,d tokens, %,d trained%n", i + 1,
                            train.size(), sample.source(), sample.length(), sample.targetCount());
                    out.println(render(sample, tokenizer, tokenizerFile, colour));
                }
            }
            out.println("---");
            out.println(describe(recipe, loaded));
            if (data.packing()) {
                out.println(packing(train, data.packer(), data.maxSeqLen()));
            }
            if (line.hasOption("dump")) {
                Path dump = Path.of(line.getOptionValue("dump"));
                dump(shown, data, tokenizerFile.eosId(), dump);
                out.printf(Locale.ROOT, "wrote %d samples%s to %s%n", shown.size(),
                        data.packing() ? " and their packed rows (" + data.packer().rowLegend() + ")" : "", dump);
            }
            return Mixtune.OK;
        }
    }

    private static Options commonOptions() {
        return new Options()
                .addOption(Mixtune.option("recipe", "FILE", "the recipe; its data section, the model's tokenizer and "
                        + "train.seed (the validation split) say what is tokenized"))
                .addOption(TrainCommand.setOption())
                .addOption(Mixtune.option("cache-dir", "DIR", "where tokenized data is cached (default "
                        + "output_dir/data-cache, where mixtune train looks)"));
    }

    private static SampleCache.Loaded load(Recipe recipe, CommandLine line) {
        if (recipe.train().readsPreferencePairs() || recipe.train().readsLabeledExamples()) {
            throw new RecipeValueException("train.method", "the recipe trains " + recipe.train().method()
                    + ": its data.files hold "
                    + (recipe.train().readsLabeledExamples() ? "unpaired examples" : "preference pairs") + ", which "
                    + "mixtune train tokenizes itself (and reports) at the start; data prepare and preview read SFT "
                    + "data (chats, texts, prompt-completions)");
        }
        String cacheDir = line.getOptionValue("cache-dir");
        return TrainingData.load(recipe, cacheDir == null ? TrainingData.cacheDir(recipe) : Path.of(cacheDir));
    }

    private static String describe(Recipe recipe, SampleCache.Loaded loaded) {
        ChatDataset dataset = loaded.dataset();
        TokenizerFile tokenizer = TrainingData.tokenizer(recipe);
        String cache = switch (loaded.status()) {
            case HIT -> "hit (nothing tokenized)";
            case BUILT -> "built (tokenized and written)";
            case REBUILT -> "rebuilt: " + loaded.note();
        };
        String template = recipe.data().template();
        String resolved = recipe.data().chatTemplate(tokenizer).name();
        String markers = TemplateWarning.of(recipe);
        return String.format(Locale.ROOT, "tokenizer: %s (bos %s, eos %d), template %s, max_seq_len %d%n"
                + "data cache: %s: %s%n"
                + "train: %,d samples, validation: %,d samples%n%s%s", tokenizer.name(),
                tokenizer.bosId() == TextTokenizer.NO_BOS ? "none" : String.valueOf(tokenizer.bosId()),
                tokenizer.eosId(), template.equals(resolved) ? template : template + " (" + resolved + ")",
                recipe.data().maxSeqLen(), loaded.file(), cache, dataset.train().size(), dataset.validation().size(),
                dataset.report(), markers == null ? "" : "\nwarning: " + markers);
    }

    /** Packing efficiency of the training set from the packer's row count alone (no rows built). */
    private static String packing(List<TokenizedSample> train, PackingStrategy strategy, int rowLength) {
        int rows = strategy.rowCount(train, rowLength);
        long tokens = train.stream().mapToLong(TokenizedSample::length).sum();
        double efficiency = rows == 0 ? 0 : (double) tokens / ((long) rows * rowLength);
        return String.format(Locale.ROOT, "packing: %,d samples in %,d rows of %d tokens (%s), %.1f%% of row tokens "
                + "real", train.size(), rows, rowLength, strategy.key(), 100 * efficiency);
    }

    // ---- showing samples -------------------------------------------------------------------------------------------

    /**
     * The sample as text, trained runs in colour or between ⟦ ⟧, BOS and EOS written as {@code <s>} and {@code </s>},
     * carriage returns as ␍. Each run's text is the decoded prefix up to its end minus the decoded prefix before it,
     * so the spaces the tokenizer folds into word-start markers come out where they are.
     */
    static String render(TokenizedSample sample, TextTokenizer tokenizer, TokenizerFile special, boolean colour) {
        StringBuilder text = new StringBuilder();
        long[] ids = sample.inputIds();
        String decodedBefore = "";
        boolean inTrained = false;
        int start = 0;
        while (start < ids.length) {
            boolean trained = sample.labels()[start] != TokenizedSample.IGNORE;
            boolean isSpecial = isSpecial(ids[start], special);
            int end = start + 1;
            while (end < ids.length && (sample.labels()[end] != TokenizedSample.IGNORE) == trained
                    && !isSpecial && !isSpecial(ids[end], special)) {
                end++;
            }
            String piece;
            if (isSpecial) {
                piece = ids[start] == special.bosId() ? "<s>" : "</s>";
            } else {
                String decoded = tokenizer.decode(Arrays.copyOf(ids, end));
                piece = decoded.startsWith(decodedBefore) ? decoded.substring(decodedBefore.length())
                        : tokenizer.decode(Arrays.copyOfRange(ids, start, end));
                decodedBefore = decoded;
            }
            piece = piece.replace("\r", "␍");
            if (trained != inTrained) {
                text.append(colour ? (trained ? ANSI_TRAINED : ANSI_RESET) : (trained ? "⟦" : "⟧"));
                inTrained = trained;
            }
            if (colour && isSpecial && !trained) {
                text.append(ANSI_SPECIAL).append(piece).append(ANSI_RESET);
            } else {
                text.append(piece);
            }
            start = end;
        }
        if (inTrained) {
            text.append(colour ? ANSI_RESET : "⟧");
        }
        return text.toString();
    }

    private static boolean isSpecial(long id, TokenizerFile tokenizer) {
        return id == tokenizer.bosId() || id == tokenizer.eosId();
    }

    /**
     * One JSON line per sample: source, input_ids, labels, position_ids (0..n-1). With packing, then one line per
     * row those samples pack into among themselves (rows of max_seq_len, padded with the EOS id): packed_row,
     * input_ids, labels, position_ids, sample_ids, as the strategy makes them ({@link PackingStrategy#rowLegend}).
     */
    static void dump(List<TokenizedSample> samples, DataConfig data, long padId, Path file) throws IOException {
        ObjectMapper json = new ObjectMapper();
        try (BufferedWriter out = Files.newBufferedWriter(file, StandardCharsets.UTF_8)) {
            for (TokenizedSample sample : samples) {
                long[] positions = new long[sample.length()];
                for (int t = 0; t < positions.length; t++) {
                    positions[t] = t;
                }
                ObjectNode row = json.createObjectNode().put("source", sample.source());
                row.set("input_ids", json.valueToTree(sample.inputIds()));
                row.set("labels", json.valueToTree(sample.labels()));
                row.set("position_ids", json.valueToTree(positions));
                out.write(json.writeValueAsString(row));
                out.write('\n');
            }
            if (!data.packing()) {
                return;
            }
            int r = 0;
            for (PackedRow packed : data.packer().pack(samples, data.maxSeqLen(), padId)) {
                ObjectNode row = json.createObjectNode().put("packed_row", r++);
                row.set("input_ids", json.valueToTree(packed.inputIds()));
                row.set("labels", json.valueToTree(packed.labels()));
                row.set("position_ids", json.valueToTree(packed.positionIds()));
                row.set("sample_ids", json.valueToTree(packed.sampleIds()));
                out.write(json.writeValueAsString(row));
                out.write('\n');
            }
        }
    }
}
