package io.mixtune.trainer.run;

import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.merging.MergeYaml;
import io.mixtune.trainer.chat.SavedTokenizer;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.tracking.TensorBoardMetrics;
import io.mixtune.trainer.tracking.TensorBoardWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * What a training run writes into output_dir besides checkpoints and metrics (adapters replaced whole, the resolved
 * recipe), and the names of all it writes, so that starting over (--force) deletes exactly those.
 */
public final class TrainingOutputs {
    public static final String RECIPE_FILE = "recipe.yaml";
    public static final String METRICS_FILE = "metrics.jsonl";
    public static final String SAMPLES_FILE = "samples.jsonl";
    public static final String PLOT_FILE = "loss.png";
    public static final String DATA_HASHES_FILE = "data-files.sha256";
    /** The chat template the run's data are tokenized with, as Jinja: what --resume holds the model's files to. */
    public static final String CHAT_TEMPLATE_FILE = "chat-template.jinja";
    public static final String CHECKPOINTS_DIR = "checkpoints";
    /** Stage-DPO's margins from dpo.margin_model (dpo.MarginStages), scored once per run. */
    public static final String DPO_MARGINS_FILE = "dpo-margins.jsonl";
    /** A WARM run's members, each a run directory of its own: members/0, members/1, ... */
    public static final String MEMBERS_DIR = "members";
    /** A WARM run's report: each member's held-out accuracy and mean margin beside the average's. */
    public static final String WARM_REPORT_FILE = "warm-report.json";
    static final String PARTIAL = ".partial";

    /**
     * What a run writes into output_dir, by name: these and nothing else are what --force deletes. data-cache/ and
     * base-model/ are not among them: caches keyed by what they hold (the data's SHA-256, {@link CachedPreset}'s
     * marker), which other runs and commands share.
     */
    private static final List<String> RUN_FILES = List.of(RECIPE_FILE, DATA_HASHES_FILE, CHAT_TEMPLATE_FILE,
            METRICS_FILE, METRICS_FILE + PARTIAL, SAMPLES_FILE, SAMPLES_FILE + PARTIAL, PLOT_FILE, PLOT_FILE + ".partial.png",
            DPO_MARGINS_FILE, DPO_MARGINS_FILE + PARTIAL, WARM_REPORT_FILE, WARM_REPORT_FILE + PARTIAL);
    /**
     * adapter/ and the weight averages' adapter-ema/, adapter-swa/, adapter-lawa/ (and DPO's stage-K/adapter/), each
     * possibly with the .partial sibling a killed write left.
     */
    private static final Pattern ADAPTER_DIR = Pattern.compile("adapter(-(ema|swa|lawa))?(\\.partial)?");
    private static final Pattern STAGE_DIR = Pattern.compile("stage-\\d+");

    private TrainingOutputs() {}

    /** output_dir, created if need be. */
    public static Path outputDir(Recipe recipe) {
        Path outputDir = Path.of(recipe.outputDir());
        try {
            Files.createDirectories(outputDir);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create output_dir " + outputDir + ": " + e.getMessage(), e);
        }
        return outputDir;
    }

    /**
     * Writes an adapter in PEFT's format to {@code adapterDir}, replaced whole: written beside it, then renamed. Files
     * someone else put into {@code adapterDir} stay: then the adapter's files are renamed into it one by one.
     */
    public static Path writeAdapter(LoraModel lora, String adapterName, Path adapterDir, Path baseModelDir) {
        return writeAdapter(lora, adapterName, adapterDir, baseModelDir, null);
    }

    /** As above, with the model's tokenizer files and the chat template trained with ({@link SavedTokenizer}). */
    public static Path writeAdapter(LoraModel lora, String adapterName, Path adapterDir, Path baseModelDir,
            Recipe recipe) {
        Path partial = adapterDir.resolveSibling(adapterDir.getFileName() + PARTIAL);
        try {
            deleteAdapter(partial);
            PeftAdapter.save(lora, adapterName, partial, baseModelDir.toAbsolutePath().toString());
            if (recipe != null) {
                SavedTokenizer.write(partial, recipe);
            }
            deleteAdapter(adapterDir);
            if (!Files.exists(adapterDir)) {
                Files.move(partial, adapterDir, StandardCopyOption.ATOMIC_MOVE);
            } else {
                for (Path file : list(partial)) {
                    Files.move(file, adapterDir.resolve(file.getFileName()), StandardCopyOption.ATOMIC_MOVE);
                }
                Files.delete(partial);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + adapterDir + ": " + e.getMessage(), e);
        }
        return adapterDir;
    }

    /** The run outputs {@code outputDir} holds (names relative to it); empty when it holds no run. */
    public static List<String> runOutputs(Path outputDir) {
        List<String> found = new ArrayList<>();
        for (Path entry : list(outputDir)) {
            String name = entry.getFileName().toString();
            if (RUN_FILES.contains(name) && Files.isRegularFile(entry)
                    || isAdapterDir(entry) || isStageDir(entry) || isTensorBoardDir(entry)) {
                found.add(Files.isDirectory(entry) ? name + "/" : name);
            }
        }
        for (Path member : list(outputDir.resolve(MEMBERS_DIR))) {
            if (isMemberDir(member) && !runOutputs(member).isEmpty()) {
                found.add(MEMBERS_DIR + "/" + member.getFileName() + "/");
            }
        }
        Path checkpoints = outputDir.resolve(CHECKPOINTS_DIR);
        for (Path checkpoint : list(checkpoints)) {
            if (TrainingCheckpoint.isCheckpointDir(checkpoint)) {
                found.add(CHECKPOINTS_DIR + "/" + checkpoint.getFileName() + "/");
            }
        }
        found.sort(null);
        return found;
    }

    /**
     * Deletes the run in {@code outputDir}, and only what mixtune wrote of it: its files by name, its checkpoints and
     * adapters file by file. Whatever else is there (a user's notes, a file put into checkpoints/) stays, and so do
     * the directories that hold it.
     */
    public static void deleteRun(Path outputDir) {
        try {
            for (Path checkpoint : list(outputDir.resolve(CHECKPOINTS_DIR))) {
                if (TrainingCheckpoint.isCheckpointDir(checkpoint)) {
                    TrainingCheckpoint.delete(checkpoint);
                }
            }
            deleteIfEmpty(outputDir.resolve(CHECKPOINTS_DIR));
            for (Path entry : list(outputDir)) {
                String name = entry.getFileName().toString();
                if (RUN_FILES.contains(name) && Files.isRegularFile(entry)) {
                    Files.delete(entry);
                } else if (isAdapterDir(entry)) {
                    deleteAdapter(entry);
                } else if (isStageDir(entry)) {
                    for (Path inside : list(entry)) {
                        if (isAdapterDir(inside)) {
                            deleteAdapter(inside);
                        }
                    }
                    deleteIfEmpty(entry);
                } else if (isTensorBoardDir(entry)) {
                    for (Path events : TensorBoardWriter.eventFiles(entry)) {
                        Files.delete(events);
                    }
                    deleteIfEmpty(entry);
                }
            }
            for (Path member : list(outputDir.resolve(MEMBERS_DIR))) {
                if (isMemberDir(member)) {
                    deleteRun(member); // its .mixtune.lock stays, as every run's does
                }
            }
            deleteIfEmpty(outputDir.resolve(MEMBERS_DIR));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot delete the earlier run in " + outputDir + ": " + e.getMessage(), e);
        }
    }

    /**
     * Whether a name directly in output_dir is one a run writes or --force deletes (a file of it, or a directory it
     * writes into): an input found there would be overwritten or deleted.
     */
    static boolean isRunOutputName(String name) {
        return RUN_FILES.contains(name) || ADAPTER_DIR.matcher(name).matches() || STAGE_DIR.matcher(name).matches()
                || name.equals(CHECKPOINTS_DIR) || name.equals(TensorBoardMetrics.RUNS_DIR) || name.equals(MEMBERS_DIR);
    }

    static boolean isAdapterDir(Path entry) {
        return Files.isDirectory(entry) && ADAPTER_DIR.matcher(entry.getFileName().toString()).matches();
    }

    private static boolean isMemberDir(Path entry) {
        return Files.isDirectory(entry) && entry.getFileName().toString().matches("\\d+");
    }

    /** runs/ when it holds TensorBoard event files (logging.tensorboard). */
    private static boolean isTensorBoardDir(Path entry) {
        return entry.getFileName().toString().equals(TensorBoardMetrics.RUNS_DIR)
                && !TensorBoardWriter.eventFiles(entry).isEmpty();
    }

    private static boolean isStageDir(Path entry) {
        return Files.isDirectory(entry) && STAGE_DIR.matcher(entry.getFileName().toString()).matches();
    }

    /**
     * Deletes a PEFT adapter mixtune wrote: its two files and the temporary files a killed write left (named
     * {@code .NAME...partial}), then the directory if nothing else is in it.
     */
    static void deleteAdapter(Path dir) throws IOException {
        for (Path file : list(dir)) {
            if (isAdapterFile(file)) {
                Files.delete(file);
            }
        }
        deleteIfEmpty(dir);
    }

    /** A file of an adapter mixtune wrote, which {@link #deleteAdapter} deletes. */
    static boolean isAdapterFile(Path file) {
        String name = file.getFileName().toString();
        return Files.isRegularFile(file) && (name.equals(PeftAdapter.CONFIG_FILE)
                || name.equals(PeftAdapter.WEIGHTS_FILE) || SavedTokenizer.FILES.contains(name)
                || name.equals(MergeYaml.RESOLVED_FILE)
                || isTemporary(name));
    }

    /** The temporary files mixtune's atomic writes use ({@code .adapter_model.safetensors.1f2e.partial}). */
    static boolean isTemporary(String name) {
        return name.startsWith(".") && name.endsWith(PARTIAL);
    }

    /**
     * Deletes a directory left empty, never a symbolic link to one: a user links checkpoints/ (or an adapter folder)
     * to another disk, and the link says where the next run writes.
     */
    static void deleteIfEmpty(Path dir) throws IOException {
        if (Files.isDirectory(dir, LinkOption.NOFOLLOW_LINKS) && list(dir).isEmpty()) {
            Files.delete(dir);
        }
    }

    static List<Path> list(Path dir) {
        if (!Files.isDirectory(dir)) {
            return List.of();
        }
        try (Stream<Path> entries = Files.list(dir)) {
            return entries.sorted().toList();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot list " + dir + ": " + e.getMessage(), e);
        }
    }

    /**
     * output_dir/recipe.yaml, the recipe with every default filled in, and output_dir/data-files.sha256, the SHA-256 of
     * every data file it names (as sha256sum writes them, so {@code sha256sum -c} checks them): written when a run
     * starts. A resumed run keeps the first run's (checked to match, {@link RunDirectory#requireSameRecipe}); only
     * missing ones are written.
     */
    public static void writeResolvedRecipe(Recipe recipe, Path outputDir, boolean resuming) {
        Path file = outputDir.resolve(RECIPE_FILE);
        Path data = outputDir.resolve(DATA_HASHES_FILE);
        try {
            if (!resuming || !Files.exists(file)) {
                Files.writeString(file, RecipeReader.toYaml(recipe), StandardCharsets.UTF_8);
            }
            if (!resuming || !Files.exists(data)) {
                StringBuilder lines = new StringBuilder();
                dataHashes(recipe).forEach((name, hash) -> lines.append(hash).append("  ").append(name).append('\n'));
                Files.writeString(data, lines, StandardCharsets.UTF_8);
            }
            Path template = outputDir.resolve(CHAT_TEMPLATE_FILE);
            if (!resuming || !Files.exists(template)) {
                Files.writeString(template, chatTemplateJinja(recipe, false), StandardCharsets.UTF_8);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + file + ": " + e.getMessage(), e);
        }
    }

    /**
     * The Jinja of the chat template the recipe's data resolve to: with data.template auto or hf the model's own,
     * from its files (the data files hash neither those nor the tokenizer).
     *
     * @param asBefore20261207 as mixtune resolved it before it read a model's chat_template.jinja: what a run that
     *     recorded no template started with
     */
    static String chatTemplateJinja(Recipe recipe, boolean asBefore20261207) {
        TokenizerFile tokenizer = TrainingData.tokenizer(recipe);
        if (asBefore20261207) {
            tokenizer = new TokenizerFile(tokenizer.name(), tokenizer.json(), tokenizer.bosId(), tokenizer.eosId(),
                    tokenizer.configName(), tokenizer.config());
        }
        return recipe.data().chatTemplate(tokenizer).jinja();
    }

    /** Every data file the recipe names (training, validation, DPO stages), as written there, to its SHA-256. */
    static Map<String, String> dataHashes(Recipe recipe) {
        Map<String, String> hashes = new TreeMap<>();
        for (Recipe.Input input : recipe.inputs().values()) {
            if (input.data()) {
                try {
                    hashes.put(input.named(), TrainingCheckpoint.sha256(input.path()));
                } catch (IOException e) {
                    throw new UncheckedIOException(input.named() + ": cannot be read: " + e.getMessage(), e);
                }
            }
        }
        return hashes;
    }

    /** The data hashes a run recorded when it started: file name to SHA-256. */
    static Map<String, String> readDataHashes(Path file) {
        Map<String, String> hashes = new TreeMap<>();
        try {
            for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
                int gap = line.indexOf("  ");
                if (gap > 0) {
                    hashes.put(line.substring(gap + 2), line.substring(0, gap));
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file + ": " + e.getMessage(), e);
        }
        return hashes;
    }

    /** Resident memory of this process (the JVM heap plus libtorch's native arrays), from /proc. */
    public static long residentMegabytes() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmRSS:")) {
                    return Long.parseLong(line.replaceAll("\\D", "")) / 1024;
                }
            }
        } catch (IOException | NumberFormatException e) {
            // not Linux: no figure
        }
        return -1;
    }
}
