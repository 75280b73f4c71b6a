package io.mixtune.trainer.run;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import io.mixtune.data.batch.PackingStrategy;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.model.checkpoint.PathOverlap;
import io.mixtune.trainer.Refusal;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A training run's output_dir, held by one run at a time: a lock on {@code output_dir/.mixtune.lock} (the operating
 * system drops it when the process ends, however it ends, so a kill -9 never leaves it stuck), taken before anything in
 * the directory is read, deleted or written. A fresh run refuses a directory that holds a run; --force deletes that
 * run first (only what mixtune wrote of it); --resume continues it only with the recipe it started with.
 */
public final class RunDirectory implements AutoCloseable {
    /** Never deleted: a lock file removed while another process waits on it would let two runs in. */
    public static final String LOCK_FILE = ".mixtune.lock";

    /** How a run treats what it finds in output_dir. */
    public enum Start {
        /** A new run: output_dir must hold no run. */
        FRESH,
        /** A new run in place of the one output_dir holds (--force). */
        FORCE,
        /** Continues the run output_dir holds from a checkpoint (--resume). */
        RESUME
    }

    /**
     * Recipe keys that may change between a run and its resumption, because none of them changes a weight, an
     * optimizer moment, the data order or the schedule: the resumed run's losses and adapters stay those of the run
     * that never stopped. Every other key refuses the resume.
     */
    private static final Set<String> MAY_CHANGE_ON_RESUME = Set.of(
            // Where the run lives: a run directory moved or copied elsewhere resumes from its own checkpoints.
            "output_dir",
            // Which steps write a metrics line: logging reads the loss, it never feeds back.
            "train.log_every", "logging.tensorboard",
            // Validation passes run without dropout or gradients and restore the adapters' mode afterwards (the
            // averages' too); dropout masks are seeded per micro-batch, so no random stream moves either.
            "train.eval_every",
            // Sample answers are greedy (no random number drawn) and without dropout (EvalSamplesTest: same losses).
            "train.eval_prompts", "train.eval_max_new_tokens",
            // When checkpoints are written and how many are kept: a checkpoint is a copy of the state.
            "train.save_every", "train.keep_last",
            // Recomputing each layer in backward gives bit-identical gradients (CheckpointedBackwardTest), so a run
            // short of memory after a restart may switch it on.
            "train.gradient_checkpointing");

    /**
     * Keys of {@link #MAY_CHANGE_ON_RESUME} that decide which evaluations are compared and which checkpoints exist, so
     * which one is best and where early stopping ends the run: refused on resume once the run keeps the best
     * checkpoint (train.metric_for_best_model, load_best_model_at_end or early_stopping_patience set).
     */
    private static final Set<String> BEST_MODEL_CADENCE = Set.of("train.eval_every", "train.save_every");

    /** Whether the flattened recipe keeps the best checkpoint (Recipe.Train#tracksBestModel). */
    private static boolean tracksBestModel(Map<String, String> recipe) {
        return "true".equals(recipe.get("train.load_best_model_at_end"))
                || !"null".equals(recipe.getOrDefault("train.metric_for_best_model", "null"))
                || !"null".equals(recipe.getOrDefault("train.early_stopping_patience", "null"));
    }

    private static final ObjectMapper YAML = new ObjectMapper(new YAMLFactory());

    private static final String PACKING_FIT = "data.packing_fit";
    /**
     * Keys added with a default other than what a run recorded before them did: absent from its recipe.yaml, they
     * read as this value (bfd packed first fit until data.packing_fit came with best fit, TRL's, as its default).
     */
    private static final Map<String, String> MEANT_WHEN_ABSENT = Map.of(PACKING_FIT, DataConfig.FIRST_FIT);

    private final Path dir;
    private final FileChannel lockChannel;
    private final FileLock lock;

    private RunDirectory(Path dir, FileChannel lockChannel, FileLock lock) {
        this.dir = dir;
        this.lockChannel = lockChannel;
        this.lock = lock;
    }

    /** As below, for a recipe built in code (no recipe file). */
    public static RunDirectory open(Recipe recipe, Start start) {
        return open(recipe, start, null);
    }

    /**
     * Takes output_dir for this run: refuses an input that lies where the run writes, creates output_dir, locks it
     * (refused while another run holds it), then refuses a run already there ({@link Start#FRESH}) or deletes it
     * ({@link Start#FORCE}).
     *
     * @param recipeFile the recipe file the run was read from, or null
     */
    public static RunDirectory open(Recipe recipe, Start start, Path recipeFile) {
        return open(recipe, start, recipeFile, null);
    }

    /**
     * As above; {@link Start#RESUME} without {@code resumeFrom} continues output_dir's own run, so output_dir must hold
     * one (its recipe.yaml, or a checkpoint): else refused, nothing created. With {@code resumeFrom} (a checkpoint or
     * run directory named by the user) output_dir may be new.
     */
    public static RunDirectory open(Recipe recipe, Start start, Path recipeFile, Path resumeFrom) {
        Path dir = Path.of(recipe.outputDir());
        if (Files.exists(dir) && !Files.isDirectory(dir)) {
            throw new Refusal("output_dir: " + dir + " is a file; expected a directory for the run's adapter, "
                    + "checkpoints and metrics (it is created if missing)");
        }
        if (start == Start.RESUME && resumeFrom == null
                && !Files.isRegularFile(dir.resolve(TrainingOutputs.RECIPE_FILE))
                && TrainingCheckpoint.list(dir.resolve(TrainingOutputs.CHECKPOINTS_DIR)).isEmpty()) {
            throw new Refusal("--resume: output_dir " + dir + " holds no run to continue (no "
                    + TrainingOutputs.RECIPE_FILE + ", no checkpoint): start it without --resume");
        }
        refuseInputsAmongOutputs(recipe, start, recipeFile, dir);
        try {
            Files.createDirectories(dir);
        } catch (IOException e) {
            // the user's to fix (a read-only or full disk, no permission), as an output_dir that is a file
            throw new Refusal("output_dir: cannot create " + dir + " (" + e + "): choose an output_dir that can be "
                    + "written");
        }
        RunDirectory run = lock(dir);
        try {
            List<String> earlier = TrainingOutputs.runOutputs(dir);
            if (start == Start.FRESH && !earlier.isEmpty()) {
                List<Path> checkpoints = TrainingCheckpoint.list(dir.resolve(TrainingOutputs.CHECKPOINTS_DIR));
                throw new Refusal("output_dir " + dir + " already holds a run (" + String.join(", ", earlier)
                        + "): " + (!checkpoints.isEmpty() ? "--resume continues it from "
                        + checkpoints.get(checkpoints.size() - 1) + ", "
                        : earlier.contains(TrainingOutputs.RECIPE_FILE) ? "it stopped before its first checkpoint: "
                        + "--resume runs it from step 0, " : "it has no checkpoint to continue from; ")
                        + "--force starts over (deleting only what mixtune wrote there), or choose another "
                        + "output_dir");
            }
            if (start == Start.FORCE) {
                TrainingOutputs.deleteRun(dir);
                if (recipe.model().preset() != null) {
                    CachedPreset.deleteIfOther(recipe.model().preset(), dir.resolve(TrainingData.BASE_MODEL_DIR));
                }
                if (recipe.distillation() != null && recipe.distillation().teacherPreset() != null) {
                    CachedPreset.deleteIfOther(recipe.distillation().teacherPreset(),
                            dir.resolve(TrainingData.TEACHER_MODEL_DIR));
                }
            }
            return run;
        } catch (RuntimeException e) {
            run.close();
            throw e;
        }
    }

    /**
     * A recipe, model, adapter or data file inside output_dir under a name the run writes (recipe.yaml, adapter/,
     * checkpoints/, ...) would be overwritten by the run or deleted by --force: refused before anything is written.
     * Resuming with output_dir/recipe.yaml is the exception: a resumed run keeps that file as it is.
     */
    private static void refuseInputsAmongOutputs(Recipe recipe, Start start, Path recipeFile, Path dir) {
        Map<Path, String> inputs = new LinkedHashMap<>();
        if (recipeFile != null && start != Start.RESUME) {
            inputs.put(recipeFile, "the recipe");
        }
        // a file named twice (a DPO stage is also in data.files) is reported under its first key
        recipe.inputs().forEach((key, input) -> inputs.putIfAbsent(input.path(), key));
        inputs.forEach((input, key) -> {
            Path inside = PathOverlap.inside(dir, input);
            if (inside != null && TrainingOutputs.isRunOutputName(inside.getName(0).toString())) {
                throw new Refusal(key + " " + input + " is output_dir/" + inside + ", which a run writes (and --force "
                        + "deletes): mixtune never overwrites or deletes an input; move it out of " + dir
                        + " or choose another output_dir");
            }
        });
    }

    private static RunDirectory lock(Path dir) {
        Path file = dir.resolve(LOCK_FILE);
        FileChannel channel = null;
        try {
            channel = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.READ,
                    StandardOpenOption.WRITE);
            FileLock lock;
            try {
                lock = channel.tryLock();
            } catch (OverlappingFileLockException heldInThisProcess) {
                lock = null;
            }
            if (lock == null) {
                String holder = Files.readString(file, StandardCharsets.UTF_8).strip();
                channel.close();
                throw new Refusal("output_dir " + dir + " is in use by another mixtune run (pid "
                        + (holder.isEmpty() ? "unknown" : holder) + "); one run writes into an output_dir at a time");
            }
            channel.truncate(0);
            channel.write(ByteBuffer.wrap((ProcessHandle.current().pid() + "\n").getBytes(StandardCharsets.UTF_8)),
                    0);
            channel.force(false);
            return new RunDirectory(dir, channel, lock);
        } catch (IOException e) {
            if (channel != null) {
                try {
                    channel.close();
                } catch (IOException ignored) {
                    // the error below matters more
                }
            }
            throw new UncheckedIOException("cannot lock output_dir " + dir + " (" + file + "): " + e.getMessage(), e);
        }
    }

    /**
     * Refuses to resume from {@code checkpoint} with a recipe other than the one its run started with (its
     * recipe.yaml, beside checkpoints/): every changed key is named, old -> new, except {@link #MAY_CHANGE_ON_RESUME}.
     * A run whose recipe.yaml is gone cannot be checked: it is said so.
     *
     * @return a warning to print, or null
     */
    public String requireSameRecipe(Recipe recipe, Path checkpoint) {
        Path first = recordedRecipe(checkpoint);
        if (!Files.isRegularFile(first)) {
            return "warning: no " + TrainingOutputs.RECIPE_FILE + " of the run beside " + checkpoint.getParent()
                    + " or in " + dir + ": cannot check that the recipe is the one the run started with";
        }
        return requireSameRecipeAs(recipe, first);
    }

    /** The recipe.yaml of the run whose checkpoint resumes (else output_dir's; it may not exist): the run's own. */
    private Path recordedRecipe(Path checkpoint) {
        Path runOfCheckpoint = checkpoint == null ? null : checkpoint.toAbsolutePath().normalize().getParent();
        runOfCheckpoint = runOfCheckpoint == null ? null : runOfCheckpoint.getParent();
        Path first = runOfCheckpoint == null ? null : runOfCheckpoint.resolve(TrainingOutputs.RECIPE_FILE);
        return first == null || !Files.isRegularFile(first) ? dir.resolve(TrainingOutputs.RECIPE_FILE) : first;
    }

    /**
     * The recipe as the resumed run packs: a run recorded before mixtune packed bfd best fit (2026-12-08; its
     * recipe.yaml has no data.packing_fit) binned its rows first fit, and resumes so whatever the recipe says, since
     * other rows would change its data order and losses. Else the recipe as given. {@link #requireSameRecipe} then
     * reads the missing key as first_fit ({@link #MEANT_WHEN_ABSENT}).
     *
     * @param checkpoint the checkpoint resumed from, or null for output_dir's run as a whole
     */
    public Recipe asStarted(Recipe recipe, Path checkpoint) {
        Path first = recordedRecipe(checkpoint);
        if (!Files.isRegularFile(first) || !recipe.train().method().equals("sft") || !recipe.data().packing()
                || recipe.data().packer() != PackingStrategy.BFD || readFlat(first).containsKey(PACKING_FIT)) {
            return recipe;
        }
        return RecipeReader.edited(recipe, first.toString(),
                tree -> ((ObjectNode) tree.get("data")).put("packing_fit", DataConfig.FIRST_FIT));
    }

    private static Map<String, String> readFlat(Path recipeFile) {
        try {
            return flatten(YAML.readTree(recipeFile.toFile()));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + recipeFile + ": " + e.getMessage(), e);
        }
    }

    /** As above for a run resumed as a whole (WARM's members each from their own checkpoint): output_dir's recipe. */
    public String requireSameRecipe(Recipe recipe) {
        Path first = dir.resolve(TrainingOutputs.RECIPE_FILE);
        if (!Files.isRegularFile(first)) {
            return "warning: no " + TrainingOutputs.RECIPE_FILE + " in " + dir + ": cannot check that the recipe is "
                    + "the one the run started with";
        }
        return requireSameRecipeAs(recipe, first);
    }

    private String requireSameRecipeAs(Recipe recipe, Path first) {
        Map<String, String> before = readFlat(first);
        Map<String, String> now;
        try {
            now = flatten(YAML.readTree(RecipeReader.toYaml(recipe)));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        List<String> changes = changedKeys(before, now);
        Path recordedData = first.resolveSibling(TrainingOutputs.DATA_HASHES_FILE);
        if (changes.isEmpty() && Files.isRegularFile(recordedData)) {
            // Same file names: their bytes must be the ones the run started with, too.
            Map<String, String> was = TrainingOutputs.readDataHashes(recordedData);
            TrainingOutputs.dataHashes(recipe).forEach((name, hash) -> {
                if (!hash.equals(was.get(name))) {
                    changes.add("data file " + name + " changed since the run started (SHA-256 "
                            + abbreviate(was.get(name)) + " -> " + abbreviate(hash) + ", " + recordedData + ")");
                }
            });
        }
        if (changes.isEmpty()) {
            // The template data.template auto or hf takes from the model's files, which no key or data hash covers.
            Path recordedTemplate = first.resolveSibling(TrainingOutputs.CHAT_TEMPLATE_FILE);
            boolean recorded = Files.isRegularFile(recordedTemplate);
            String was;
            try {
                was = recorded ? Files.readString(recordedTemplate)
                        : TrainingOutputs.chatTemplateJinja(recipe, true);
            } catch (IOException e) {
                throw new UncheckedIOException("cannot read " + recordedTemplate + ": " + e.getMessage(), e);
            }
            if (!was.equals(TrainingOutputs.chatTemplateJinja(recipe, false))) {
                changes.add(recorded ? "the chat template the data are tokenized with is not the one the run started "
                        + "with (" + recordedTemplate + "): the model's chat_template.jinja or tokenizer_config.json "
                        + "changed" : "the model's chat_template.jinja, which mixtune reads since 2026-12-07 (as "
                        + "transformers does, before tokenizer_config.json), gives another chat template than the one "
                        + "the run started with");
            }
        }
        if (!changes.isEmpty()) {
            throw new Refusal("--resume: the recipe or its data differ from those the run started with (" + first
                    + "): " + String.join("; ", changes) + ". A resumed run continues exactly only with its first "
                    + "recipe and data: resume with " + first + ", or start a new run in another output_dir (or "
                    + "--force)");
        }
        return null;
    }

    private static String abbreviate(String hash) {
        return hash == null ? "(not recorded)" : hash.substring(0, 12) + "...";
    }

    /**
     * "key: old -> new" for every key whose value differs, in the recipe's order; absent keys read "(not set)". A key
     * the first recipe.yaml lacks and that now holds its default ({@link RecipeReader#DEFAULTS}) is no change: a newer
     * mixtune added it, and the run started with what it means.
     */
    static List<String> changedKeys(Map<String, String> before, Map<String, String> now) {
        Map<String, String> all = new LinkedHashMap<>(now);
        before.forEach(all::putIfAbsent);
        Map<String, String> defaults = defaults();
        String unread = unreadPolicyGradientSection(before, now);
        List<String> changes = new ArrayList<>();
        for (String key : all.keySet()) {
            if (unread != null && key.startsWith(unread)) {
                continue;
            }
            String was = before.getOrDefault(key, "(not set)");
            String is = now.getOrDefault(key, "(not set)");
            boolean addedAtDefault = !before.containsKey(key) && (is.equals(defaults.get(key))
                    || is.equals(MEANT_WHEN_ABSENT.get(key)));
            if (!sameValue(was, is) && !addedAtDefault && !(MAY_CHANGE_ON_RESUME.contains(key)
                    && !(BEST_MODEL_CADENCE.contains(key) && tracksBestModel(before)))) {
                changes.add(key + ": " + was + " -> " + is);
            }
        }
        return changes;
    }

    /**
     * "grpo." for a run of train.method rloo before and now, "rloo." for grpo: the section that method never reads
     * (RecipeReader refuses it set off its defaults, so a run started while it was let be resumes with it dropped).
     */
    private static String unreadPolicyGradientSection(Map<String, String> before, Map<String, String> now) {
        String method = now.get("train.method");
        if (method == null || !method.equals(before.get("train.method"))) {
            return null;
        }
        return method.equals("rloo") ? "grpo." : method.equals("grpo") ? "rloo." : null;
    }

    /**
     * Equal, or one value and the list of just that value: a key that became a list (dpo.loss) reads a single value as
     * the list of it, so a recipe.yaml written before (loss: sigmoid) means what the list ["sigmoid"] means now.
     */
    private static boolean sameValue(String was, String is) {
        return was.equals(is) || was.equals(onlyElement(is)) || is.equals(onlyElement(was));
    }

    /** The text of a flattened list's one scalar element, else null. */
    private static String onlyElement(String flattened) {
        if (!flattened.startsWith("[")) {
            return null;
        }
        try {
            JsonNode list = new ObjectMapper().readTree(flattened);
            return list.isArray() && list.size() == 1 && list.get(0).isValueNode() ? list.get(0).asText() : null;
        } catch (IOException e) {
            return null;
        }
    }

    /** The recipe defaults as dotted keys to values. */
    private static Map<String, String> defaults() {
        try (InputStream in = RunDirectory.class.getClassLoader().getResourceAsStream(RecipeReader.DEFAULTS)) {
            if (in == null) {
                throw new IllegalStateException(RecipeReader.DEFAULTS + " is missing from the classpath");
            }
            return flatten(YAML.readTree(in));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + RecipeReader.DEFAULTS + ": " + e.getMessage(), e);
        }
    }

    /** A YAML tree as dotted keys to values; a list is one value, as written in YAML's flow style. */
    static Map<String, String> flatten(JsonNode tree) {
        Map<String, String> flat = new LinkedHashMap<>();
        flatten(tree, "", flat);
        return flat;
    }

    /** Maps whose order is part of their meaning: PEFT's first matching pattern key decides. */
    private static final Set<String> ORDERED_MAPS = Set.of("lora.rank_pattern", "lora.alpha_pattern");

    private static void flatten(JsonNode node, String prefix, Map<String, String> flat) {
        if (node != null && node.isObject() && ORDERED_MAPS.contains(prefix)) {
            flat.put(prefix, node.toString()); // compared whole, so that a reordering is a change
        } else if (node != null && node.isObject()) {
            Iterator<Map.Entry<String, JsonNode>> fields = node.fields();
            while (fields.hasNext()) {
                Map.Entry<String, JsonNode> field = fields.next();
                flatten(field.getValue(), prefix.isEmpty() ? field.getKey() : prefix + "." + field.getKey(), flat);
            }
        } else if (node == null || node.isNull()) {
            flat.put(prefix, "null");
        } else if (node.isValueNode()) {
            flat.put(prefix, node.asText());
        } else {
            flat.put(prefix, node.toString());
        }
    }

    public Path dir() {
        return dir;
    }

    /** Releases the lock; its file stays (see {@link #LOCK_FILE}). */
    @Override
    public void close() {
        try {
            lock.release();
            lockChannel.close();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot unlock " + dir.resolve(LOCK_FILE) + ": " + e.getMessage(), e);
        }
    }
}
