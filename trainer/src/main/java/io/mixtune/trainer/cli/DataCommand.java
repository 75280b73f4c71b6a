package io.mixtune.trainer.cli;

import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonMappingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.PropertyNamingStrategies;
import com.fasterxml.jackson.databind.exc.ValueInstantiationException;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLMapper;
import io.mixtune.data.batch.PackedRow;
import io.mixtune.data.batch.SamplePacker;
import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;
import org.yaml.snakeyaml.error.MarkedYAMLException;

/**
 * {@code mixtune data prepare} and {@code mixtune data preview}: a recipe's {@code data:} section tokenized into the
 * data cache that training reads, or shown sample by sample with the trained tokens marked.
 */
final class DataCommand {
    static final String DEFAULT_CACHE_DIR = "out/data-cache";
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
            return "--recipe R [--cache-dir DIR]";
        }

        @Override
        public Options options() {
            return commonOptions();
        }

        @Override
        public int run(CommandLine line, PrintStream out) {
            DataSection section = readDataSection(Path.of(Mixtune.requiredOption(line, "recipe")));
            SampleCache.Loaded loaded = load(section, line);
            out.println(describe(section, loaded));
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
            return "--recipe R [--n 3] [--dump FILE.jsonl] [--color auto|always|never] [--cache-dir DIR]";
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
            DataSection section = readDataSection(Path.of(Mixtune.requiredOption(line, "recipe")));
            SampleCache.Loaded loaded = load(section, line);
            List<TokenizedSample> train = loaded.dataset().train();
            List<TokenizedSample> shown = train.subList(0, Math.min(n, train.size()));
            try (TextTokenizer tokenizer = section.tokenizer().open()) {
                for (int i = 0; i < shown.size(); i++) {
                    TokenizedSample sample = shown.get(i);
                    out.printf(Locale.ROOT, "--- sample %d of %,d (%s): %,d tokens, %,d trained%n", i + 1,
                            train.size(), sample.source(), sample.length(), sample.targetCount());
                    out.println(render(sample, tokenizer, section.tokenizer(), colour));
                }
            }
            out.println("---");
            out.println(describe(section, loaded));
            if (section.data().packing()) {
                out.println(packing(train, section.data().maxSeqLen()));
            }
            if (line.hasOption("dump")) {
                Path dump = Path.of(line.getOptionValue("dump"));
                dump(shown, section, dump);
                out.printf(Locale.ROOT, "wrote %d samples%s to %s%n", shown.size(),
                        section.data().packing() ? " and their packed rows" : "", dump);
            }
            return Mixtune.OK;
        }
    }

    private static Options commonOptions() {
        return new Options()
                .addOption(Mixtune.option("recipe", "R", "recipe YAML; its data section is read (and model.path or "
                        + "model.preset for the tokenizer, train.seed for the validation split)"))
                .addOption(Mixtune.option("cache-dir", "DIR", "where tokenized data is cached (default "
                        + DEFAULT_CACHE_DIR + ")"));
    }

    private static SampleCache.Loaded load(DataSection section, CommandLine line) {
        Path cacheDir = Path.of(line.getOptionValue("cache-dir", DEFAULT_CACHE_DIR));
        return new SampleCache(cacheDir).load(section.data(), section.tokenizer(), section.seed());
    }

    private static String describe(DataSection section, SampleCache.Loaded loaded) {
        ChatDataset dataset = loaded.dataset();
        String cache = switch (loaded.status()) {
            case HIT -> "hit (nothing tokenized)";
            case BUILT -> "built (tokenized and written)";
            case REBUILT -> "rebuilt: " + loaded.note();
        };
        return String.format(Locale.ROOT, "tokenizer: %s (bos %d, eos %d), template %s, max_seq_len %d%n"
                + "data cache: %s: %s%n"
                + "train: %,d samples, validation: %,d samples%n%s", section.tokenizer().name(),
                section.tokenizer().bosId(), section.tokenizer().eosId(), section.data().template(),
                section.data().maxSeqLen(), loaded.file(), cache, dataset.train().size(),
                dataset.validation().size(), dataset.report());
    }

    /** Packing efficiency of the training set from the packer's assignment alone (no rows built). */
    private static String packing(List<TokenizedSample> train, int rowLength) {
        List<int[]> rows = new SamplePacker(rowLength, 0).assign(train);
        long tokens = train.stream().mapToLong(TokenizedSample::length).sum();
        double efficiency = rows.isEmpty() ? 0 : (double) tokens / ((long) rows.size() * rowLength);
        return String.format(Locale.ROOT, "packing: %,d samples in %,d rows of %d tokens, %.1f%% of row tokens real",
                train.size(), rows.size(), rowLength, 100 * efficiency);
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
     * input_ids, labels (a sample's first token untrained), position_ids (restarting per sample), sample_ids.
     */
    static void dump(List<TokenizedSample> samples, DataSection section, Path file) throws IOException {
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
            if (!section.data().packing()) {
                return;
            }
            SamplePacker packer = new SamplePacker(section.data().maxSeqLen(), section.tokenizer().eosId());
            int r = 0;
            for (int[] assignment : packer.assign(samples)) {
                List<TokenizedSample> members = new ArrayList<>();
                for (int index : assignment) {
                    members.add(samples.get(index));
                }
                PackedRow packed = packer.row(members);
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

    // ---- the recipe ------------------------------------------------------------------------------------------------
    // Until the recipe loader (io.mixtune.trainer.recipe) is in, the data commands read only what they need from the
    // recipe: the data section, strictly, and model.path / model.preset / train.seed, leniently. Replace
    // readDataSection with the loader's Recipe and keep everything above.

    /** What the data commands take from a recipe. */
    record DataSection(DataConfig data, TokenizerFile tokenizer, long seed) {}

    static DataSection readDataSection(Path recipe) {
        if (!Files.isRegularFile(recipe)) {
            throw new IllegalArgumentException(recipe + ": no such recipe file");
        }
        YAMLMapper yaml = YAMLMapper.builder()
                .propertyNamingStrategy(PropertyNamingStrategies.SNAKE_CASE)
                .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                .enable(DeserializationFeature.ACCEPT_SINGLE_VALUE_AS_ARRAY)
                .build();
        JsonNode root;
        try {
            root = yaml.readTree(recipe.toFile());
        } catch (JsonProcessingException e) {
            if (e.getCause() instanceof MarkedYAMLException yamlError && yamlError.getProblemMark() != null) {
                throw new IllegalArgumentException(recipe + ":" + (yamlError.getProblemMark().getLine() + 1)
                        + ": not valid YAML: " + yamlError.getProblem(), e);
            }
            throw new IllegalArgumentException(at(recipe, e.getLocation()) + "not valid YAML: "
                    + e.getOriginalMessage().replace('\n', ' '), e);
        } catch (IOException e) {
            throw new IllegalArgumentException(recipe + ": cannot be read: " + e.getMessage(), e);
        }
        if (root == null || !root.isObject() || !root.has("data")) {
            throw new IllegalArgumentException(recipe + ": no data section (data: files, template, max_seq_len, ...)");
        }
        DataConfig data = bindData(yaml, recipe, root.get("data"));
        JsonNode model = root.path("model");
        String modelPath = model.hasNonNull("path") ? model.get("path").asText() : null;
        String preset = model.hasNonNull("preset") ? model.get("preset").asText() : null;
        JsonNode seed = root.path("train").path("seed");
        if (!seed.isMissingNode() && !seed.isNull() && !seed.canConvertToLong()) {
            throw new IllegalArgumentException(recipe + ": train.seed: expected an integer, got " + seed);
        }
        return new DataSection(data, tokenizer(modelPath, preset), seed.canConvertToLong() ? seed.asLong() : 0);
    }

    /** The model directory's tokenizer.json and config.json ids, else the bundled Mistral v1 tokenizer. */
    private static TokenizerFile tokenizer(String modelPath, String preset) {
        long bos = 1;
        long eos = 2;
        Path dir = modelPath == null ? null : Path.of(modelPath);
        if (dir != null && Files.isRegularFile(dir.resolve("config.json"))) {
            ModelConfig config = ModelConfig.read(dir.resolve("config.json"));
            bos = config.bosTokenId();
            eos = config.eosTokenId();
        } else if (preset != null) {
            ModelConfig config = ModelPreset.load(preset);
            bos = config.bosTokenId();
            eos = config.eosTokenId();
        }
        if (dir != null && Files.isRegularFile(dir.resolve("tokenizer.json"))) {
            return TokenizerFile.of(dir.resolve("tokenizer.json"), bos, eos);
        }
        return TokenizerFile.resource(ModelPreset.MISTRAL_V1_TOKENIZER, bos, eos);
    }

    /**
     * Binds the data section; every error names the recipe line of the key it is about. Unknown keys are looked for
     * first: Jackson reports them only after the record's constructor ran, and at the end of the section.
     */
    private static DataConfig bindData(YAMLMapper yaml, Path recipe, JsonNode data) {
        Map<String, Integer> lines = dataKeyLines(yaml, recipe);
        int sectionLine = lines.get("");
        if (!data.isObject()) {
            throw new IllegalArgumentException(recipe + ":" + sectionLine + ": data: expected keys (files, template, "
                    + "max_seq_len, ...), got " + data);
        }
        List<String> keys = keyNames(DataConfig.class);
        List<String> customKeys = keyNames(DataConfig.CustomTemplateConfig.class);
        for (Map.Entry<String, Integer> key : lines.entrySet()) {
            String name = key.getKey();
            boolean nested = name.startsWith("custom_template.");
            List<String> known = nested ? customKeys : keys;
            if (!name.isEmpty() && !known.contains(nested ? name.substring("custom_template.".length()) : name)) {
                throw new IllegalArgumentException(recipe + ":" + key.getValue() + ": data." + name + ": unknown key; "
                        + "expected one of " + known);
            }
        }
        try {
            return yaml.treeToValue(data, DataConfig.class);
        } catch (ValueInstantiationException e) {
            // The record's constructor says which key is wrong, as "key: problem".
            String message = e.getCause() == null ? e.getOriginalMessage() : e.getCause().getMessage();
            String key = message.contains(":") ? message.substring(0, message.indexOf(':')) : "";
            Integer line = lines.get(key);
            throw new IllegalArgumentException(recipe + ":" + (line == null ? sectionLine : line) + ": data." + message
                    + (line == null && !key.isEmpty() ? " (" + key + " is not set)" : ""), e);
        } catch (JsonProcessingException e) {
            String key = e instanceof JsonMappingException mapping ? mapping.getPath().stream()
                    .map(r -> r.getFieldName() != null ? r.getFieldName() : "[" + r.getIndex() + "]")
                    .collect(Collectors.joining(".")).replace(".[", "[") : "";
            int line = lines.getOrDefault(key, lines.getOrDefault(key.replaceAll("\\[.*", ""), sectionLine));
            throw new IllegalArgumentException(recipe + ":" + line + ": data." + key + ": "
                    + e.getOriginalMessage().replace('\n', ' '), e);
        }
    }

    /** The snake_case YAML keys of a record. */
    private static List<String> keyNames(Class<? extends Record> type) {
        PropertyNamingStrategies.NamingBase snake = (PropertyNamingStrategies.NamingBase) PropertyNamingStrategies.SNAKE_CASE;
        return Arrays.stream(type.getRecordComponents()).map(c -> snake.translate(c.getName())).toList();
    }

    /** The line of each key of the data section ("custom_template.user_prefix" for nested ones), "" for "data:". */
    private static Map<String, Integer> dataKeyLines(YAMLMapper yaml, Path recipe) {
        Map<String, Integer> lines = new LinkedHashMap<>();
        try (JsonParser parser = yaml.createParser(recipe.toFile())) {
            parser.nextToken();
            while (parser.nextToken() == JsonToken.FIELD_NAME) {
                boolean isData = parser.currentName().equals("data");
                if (isData) {
                    lines.put("", parser.currentTokenLocation().getLineNr());
                }
                if (parser.nextToken() == JsonToken.START_OBJECT && isData) {
                    keyLines(parser, "", lines);
                } else {
                    parser.skipChildren();
                }
            }
        } catch (IOException e) {
            throw new IllegalArgumentException(recipe + ": cannot be read: " + e.getMessage(), e);
        }
        return lines;
    }

    private static void keyLines(JsonParser parser, String prefix, Map<String, Integer> lines) throws IOException {
        while (parser.nextToken() == JsonToken.FIELD_NAME) {
            String key = prefix + parser.currentName();
            lines.put(key, parser.currentTokenLocation().getLineNr());
            if (parser.nextToken() == JsonToken.START_OBJECT && prefix.isEmpty()) {
                keyLines(parser, key + ".", lines);
            } else {
                parser.skipChildren();
            }
        }
    }

    private static String at(Path recipe, JsonLocation location) {
        return recipe + (location == null || location.getLineNr() < 1 ? "" : ":" + location.getLineNr()) + ": ";
    }

}
