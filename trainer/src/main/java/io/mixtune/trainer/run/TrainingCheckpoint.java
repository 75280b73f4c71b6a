package io.mixtune.trainer.run;

import ai.djl.ndarray.NDArray;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.nn.InPlaceCopy;
import io.mixtune.model.safetensors.ArrayTensors;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import io.mixtune.trainer.Refusal;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.AdamW8bit;
import io.mixtune.trainer.optim.LossScaler;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.Consumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * A resumable point of a run, {@code checkpoints/step-000040/}: {@code adapter/} (PEFT, for users),
 * {@code trainer_state.safetensors} (the exact fp32 adapter weights and AdamW moments) and {@code trainer_state.json}
 * (step, optimizer steps, the SHA-256 of every file). It is written into a {@code .partial} directory and renamed
 * into place, so a kill at any moment leaves every earlier checkpoint whole; the hashes catch a file damaged later.
 * A step saved again (after a resume from an older checkpoint) replaces the old copy only once the new one is complete,
 * and the old one is renamed {@code step-N.replaced} until the new one is in place, so that a kill at any moment
 * leaves a complete step N that resume finds ({@link #list}).
 */
public final class TrainingCheckpoint {
    public static final String STATE_JSON = "trainer_state.json";
    static final String STATE_TENSORS = "trainer_state.safetensors";
    static final String ADAPTER_DIR = "adapter";
    /** DPO's: the reference adapter's arrays and the stage's reference log-probs. */
    public static final String REFERENCE_STATE = "reference_state.safetensors";
    /** The old copy of a step being saved again, while the new one is moved into place. */
    private static final String REPLACED = ".replaced";
    private static final Pattern NAME_OR_REPLACED = Pattern.compile("step-(\\d+)(\\.replaced)?");
    private static final Pattern ANY_NAME = Pattern.compile("step-\\d+(\\.partial|\\.replaced)?");
    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * What a checkpoint saves: the live arrays of a run after {@code step}, written one tensor at a time straight from
     * their memory ({@link ArrayTensors}), so that no Java copy of the state exists at any moment.
     *
     * @param averages the weight averages' arrays by name ({@link TrainingAverages#arrays}), in parameter order
     * @param bestModel the best checkpoint and early stopping so far ({@link BestModel}), null with them off
     */
    public record Snapshot(long step, long optimizerSteps, LossScaler.State lossScaler, List<NDArray> parameters,
            List<NDArray> firstMoments, List<NDArray> secondMoments, Map<String, List<NDArray>> averages,
            OptionalLong numTokens, BestModel.State bestModel) {

        public static Snapshot of(long step, List<NDArray> parameters, AdamW optimizer, LossScaler scaler,
                Map<String, List<NDArray>> averages, OptionalLong numTokens) {
            return of(step, parameters, optimizer, scaler, averages, numTokens, null);
        }

        static Snapshot of(long step, List<NDArray> parameters, AdamW optimizer, LossScaler scaler,
                Map<String, List<NDArray>> averages, OptionalLong numTokens, BestModel.State bestModel) {
            return new Snapshot(step, optimizer.stepCount(), scaler.state(), parameters, optimizer.firstMoments(),
                    optimizer.secondMoments(), averages, numTokens, bestModel);
        }
    }

    /**
     * What a checkpoint restores, read tensor by tensor into the live arrays when restored ({@link ArrayTensors#readInto}):
     * like saving, resuming never holds the state on the Java heap.
     *
     * @param tensors the checkpoint's {@value #STATE_TENSORS}, its shapes checked against the run's
     * @param averages the names of the weight averages it holds ({@link TrainingAverages#arrays})
     * @param numTokens real tokens the run read through {@code step} (TRL's num_tokens); empty in a checkpoint written
     *     before mixtune counted them
     * @param bestModel the best checkpoint and early stopping as they stood ({@link BestModel}); null where the run
     *     kept none
     */
    public record State(long step, long optimizerSteps, LossScaler.State lossScaler, Path tensors, int parameters,
            Set<String> averages, OptionalLong numTokens, BestModel.State bestModel) {

        /** Puts the adapter arrays back in place. */
        public void restoreParameters(List<NDArray> into) {
            readInto("parameter.", into);
        }

        /** Puts the adapter arrays, AdamW's moments and the loss scaler back in place. */
        public void restore(List<NDArray> into, AdamW optimizer, LossScaler scaler) {
            restoreParameters(into);
            if (optimizer.eightBitMoments() != null) {
                // adamw_bnb_8bit: codes and absmax in the file the run wrote beside this one (TrainingLoop)
                optimizer.eightBitMoments().restore(tensors.resolveSibling(AdamW8bit.STATE_FILE));
            } else {
                readInto("exp_avg.", optimizer.firstMoments());
                readInto("exp_avg_sq.", optimizer.secondMoments());
            }
            optimizer.restoreStepCount(optimizerSteps);
            scaler.restore(lossScaler);
        }

        /** The saved average {@code name} (one of {@link #averages}), into arrays of the parameters' shapes. */
        public void readAverage(String name, List<NDArray> into) {
            readInto("average." + name + ".", into);
        }

        private void readInto(String prefix, List<NDArray> into) {
            if (into.size() != parameters) {
                throw new IllegalArgumentException(tensors + " holds " + parameters + " arrays of " + prefix
                        + "*, the run has " + into.size());
            }
            try (SafetensorsReader reader = SafetensorsReader.open(tensors)) {
                for (int i = 0; i < parameters; i++) {
                    ArrayTensors.readInto(reader, prefix + i, into.get(i));
                }
            }
        }
    }

    private TrainingCheckpoint() {}

    public static Path directoryOf(Path checkpoints, long step) {
        return checkpoints.resolve(String.format("step-%06d", step));
    }

    /**
     * Checkpoints the adapter {@code adapterName} being trained: the state, the adapter in PEFT format and whatever
     * {@code extras} writes into the checkpoint directory (all hashed); then prunes all but the newest keepLast.
     */
    public static Path save(Path checkpoints, Snapshot state, LoraModel lora, String adapterName, Path baseModelDir,
            int keepLast, Consumer<Path> extras) {
        Path saved = save(checkpoints, state, dir -> {
            PeftAdapter.save(lora, adapterName, dir.resolve(ADAPTER_DIR), baseModelDir.toAbsolutePath().toString());
            extras.accept(dir);
        });
        long best = state.bestModel() == null ? 0 : state.bestModel().bestCheckpointStep();
        prune(checkpoints, keepLast, best > 0 ? directoryOf(checkpoints, best) : null);
        return saved;
    }

    /**
     * Puts a checkpoint's adapter arrays, AdamW's moments and the loss scaler back in place; returns the state, for
     * its step and what else the caller keeps.
     */
    public static State restore(Path dir, List<NDArray> parameters, AdamW optimizer, LossScaler scaler) {
        State state = load(dir, shapesOf(parameters));
        state.restore(parameters, optimizer, scaler);
        return state;
    }

    public static List<long[]> shapesOf(List<NDArray> parameters) {
        return parameters.stream().map(p -> p.getShape().getShape()).toList();
    }

    /**
     * Writes a checkpoint for {@code step}.
     *
     * @param writeContents writes the adapter and anything else into the (partial) checkpoint directory it is given
     */
    static Path save(Path checkpoints, Snapshot state, Consumer<Path> writeContents) {
        return save(checkpoints, state, writeContents, MOVE);
    }

    /** Renames a directory; tests stand a kill in for one. */
    interface Rename {
        void move(Path from, Path to) throws IOException;
    }

    private static final Rename MOVE = (from, to) -> Files.move(from, to, StandardCopyOption.ATOMIC_MOVE);

    static Path save(Path checkpoints, Snapshot state, Consumer<Path> writeContents, Rename rename) {
        Path target = directoryOf(checkpoints, state.step());
        Path partial = checkpoints.resolve(target.getFileName() + ".partial");
        try {
            if (Files.exists(target)) {
                // checked before anything is written or deleted, so that the refusal leaves step N as it was
                List<Path> others = notWrittenByMixtune(target);
                if (!others.isEmpty()) {
                    throw new IOException("it holds files mixtune did not write, "
                            + others.stream().map(p -> target.relativize(p).toString()).toList() + ": move them away");
                }
            }
            delete(partial);
            Files.createDirectories(partial);
            writeContents.accept(partial);
            List<TensorSpec> specs = new ArrayList<>();
            Map<String, NDArray> arrays = new TreeMap<>();
            int parameters = state.parameters().size();
            for (int i = 0; i < parameters; i++) {
                put(specs, arrays, "parameter." + i, state.parameters().get(i));
                if (!state.firstMoments().isEmpty()) { // empty with 8-bit moments, saved in a file of their own
                    put(specs, arrays, "exp_avg." + i, state.firstMoments().get(i));
                    put(specs, arrays, "exp_avg_sq." + i, state.secondMoments().get(i));
                }
                for (Map.Entry<String, List<NDArray>> average : state.averages().entrySet()) {
                    put(specs, arrays, "average." + average.getKey() + "." + i, average.getValue().get(i));
                }
            }
            try (ArrayTensors tensors = new ArrayTensors(arrays)) {
                SafetensorsWriter.writeFile(partial.resolve(STATE_TENSORS), specs, tensors);
            }
            ObjectNode json = JSON.createObjectNode();
            json.put("step", state.step());
            json.put("optimizer_steps", state.optimizerSteps());
            json.put("loss_scale", state.lossScaler().scale());
            json.put("loss_scale_finite_streak", state.lossScaler().finiteStreak());
            json.put("skipped_steps", state.lossScaler().skippedSteps());
            json.put("skipped_in_a_row", state.lossScaler().skippedInARow());
            json.put("parameters", parameters);
            state.numTokens().ifPresent(tokens -> json.put("num_tokens", tokens));
            state.averages().keySet().forEach(json.putArray("averages")::add);
            if (state.bestModel() != null) {
                state.bestModel().writeInto(json, checkpoints);
            }
            ObjectNode hashes = json.putObject("sha256");
            for (Path file : filesUnder(partial)) {
                if (!file.getFileName().toString().equals(STATE_JSON)) {
                    hashes.put(partial.relativize(file).toString(), sha256(file));
                }
            }
            JSON.writerWithDefaultPrettyPrinter().writeValue(partial.resolve(STATE_JSON).toFile(), json);
            moveIntoPlace(partial, target, rename);
            return target;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write checkpoint " + target + ": " + e.getMessage(), e);
        }
    }

    /**
     * Moves a complete checkpoint to {@code target}, where the same step may be already (saved again after a resume
     * from an older checkpoint; the new copy is the same state, and the newest written wins, as a save always has).
     * A directory cannot be renamed over a full one, so the old copy is renamed aside to {@code step-N.replaced} first,
     * a name {@link #list} takes for step N while no {@code step-N} exists: at every moment one of the two is complete.
     * Keeping the old copy instead would leave a damaged one (the reason to resume from an older step) in place.
     */
    private static void moveIntoPlace(Path partial, Path target, Rename rename) throws IOException {
        Path replaced = replacedCopyOf(target);
        if (Files.exists(target)) {
            delete(replaced); // a kill after the last replacement's move-in left it: target is newer and complete
            if (Files.exists(replaced)) {
                throw new IOException(replaced + " holds files mixtune did not write, "
                        + TrainingOutputs.list(replaced).stream().map(p -> p.getFileName().toString()).toList()
                        + ": move them away");
            }
            rename.move(target, replaced);
        }
        // with no step-N, an existing step-N.replaced (from a kill before a move-in) is the complete copy until here
        rename.move(partial, target);
        delete(replaced);
    }

    private static void put(List<TensorSpec> specs, Map<String, NDArray> arrays, String name, NDArray array) {
        specs.add(new TensorSpec(name, DType.F32, array.getShape().getShape()));
        arrays.put(name, array);
    }

    /**
     * Where a save of the same step again keeps the old copy of {@code stepDir} until the new one is in place: after a
     * kill between the two renames, the complete copy of that step.
     */
    public static Path replacedCopyOf(Path stepDir) {
        return stepDir.resolveSibling(stepDir.getFileName() + REPLACED);
    }

    /** Refuses a directory without the checkpoint's state file, saying what --resume takes. */
    public static void requireComplete(Path dir) {
        if (!Files.isRegularFile(dir.resolve(STATE_JSON))) {
            throw new Refusal(dir + " is not a complete checkpoint: " + STATE_JSON + " is missing"
                    + (dir.getFileName().toString().endsWith(".partial") ? " (it was being written when the run stopped)"
                    : " (--resume takes a checkpoint, RUN/checkpoints/step-N, or the run directory RUN)"));
        }
    }

    /** Reads and verifies a checkpoint; a missing or damaged file is named. */
    public static State load(Path dir, List<long[]> shapes) {
        Path stateJson = dir.resolve(STATE_JSON);
        requireComplete(dir);
        try {
            String problem = verify(dir);
            if (problem != null) {
                throw new Refusal("cannot resume: " + problem);
            }
            JsonNode json = JSON.readTree(stateJson.toFile());
            if (json.get("parameters").asInt() != shapes.size()) {
                throw new Refusal("checkpoint " + dir + " holds " + json.get("parameters").asInt()
                        + " adapter arrays, this run has " + shapes.size() + ": was the lora section changed?");
            }
            Set<String> averages = new LinkedHashSet<>();
            json.path("averages").forEach(name -> averages.add(name.asText()));
            Path tensors = dir.resolve(STATE_TENSORS);
            try (SafetensorsReader reader = SafetensorsReader.open(tensors)) {
                for (int i = 0; i < shapes.size(); i++) {
                    List<String> names = new ArrayList<>(List.of("parameter." + i));
                    if (reader.contains("exp_avg." + i)) { // absent with adamw_bnb_8bit: AdamW8bit checks its own
                        names.addAll(List.of("exp_avg." + i, "exp_avg_sq." + i));
                    }
                    for (String average : averages) {
                        names.add("average." + average + "." + i);
                    }
                    for (String name : names) {
                        long[] saved = reader.info(name).shape();
                        if (!java.util.Arrays.equals(saved, shapes.get(i))) {
                            throw new Refusal("checkpoint " + dir + ": adapter array " + i + " has shape "
                                    + java.util.Arrays.toString(saved) + " (" + name + "), this run has "
                                    + java.util.Arrays.toString(shapes.get(i)) + ": was the lora section changed?");
                        }
                    }
                }
            }
            return new State(json.get("step").asLong(), json.get("optimizer_steps").asLong(),
                    new LossScaler.State(json.get("loss_scale").asDouble(),
                            json.path("loss_scale_finite_streak").asInt(0), json.path("skipped_steps").asLong(0),
                            json.path("skipped_in_a_row").asInt(0)),
                    tensors, shapes.size(), averages, json.has("num_tokens")
                            ? OptionalLong.of(json.get("num_tokens").asLong()) : OptionalLong.empty(),
                    BestModel.State.readFrom(json));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read checkpoint " + dir + ": " + e.getMessage(), e);
        }
    }

    /** Null when the checkpoint's files are all there and match their hashes, else what is wrong with it. */
    public static String verify(Path dir) {
        try {
            JsonNode json = JSON.readTree(dir.resolve(STATE_JSON).toFile());
            var names = json.get("sha256").fieldNames();
            while (names.hasNext()) {
                String name = names.next();
                Path file = dir.resolve(name);
                if (!Files.isRegularFile(file)) {
                    return "checkpoint " + dir + ": " + name + " is missing";
                }
                if (!sha256(file).equals(json.get("sha256").get(name).asText())) {
                    return "checkpoint " + dir + ": " + name + " does not match its SHA-256 in " + STATE_JSON;
                }
            }
            return null;
        } catch (IOException | RuntimeException e) {
            return "checkpoint " + dir + ": " + STATE_JSON + " is missing or unreadable";
        }
    }

    /**
     * Complete checkpoint directories (no .partial; a step-N.replaced where a kill left it as the only copy of step N),
     * oldest first.
     */
    public static List<Path> list(Path checkpoints) {
        List<Path> found = new ArrayList<>();
        if (!Files.isDirectory(checkpoints)) {
            return found;
        }
        try (DirectoryStream<Path> entries = Files.newDirectoryStream(checkpoints)) {
            for (Path entry : entries) {
                Matcher name = NAME_OR_REPLACED.matcher(entry.getFileName().toString());
                // step-N.replaced is step N only while no step-N exists (a kill between the two renames of a save)
                if (Files.isDirectory(entry) && name.matches() && (name.group(2) == null
                        || !Files.exists(directoryOf(checkpoints, Long.parseLong(name.group(1)))))) {
                    found.add(entry);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        found.sort(Comparator.comparingLong(TrainingCheckpoint::stepOf));
        return found;
    }

    static long stepOf(Path dir) {
        Matcher matcher = NAME_OR_REPLACED.matcher(dir.getFileName().toString());
        return matcher.matches() ? Long.parseLong(matcher.group(1)) : -1;
    }

    /**
     * Deletes all but the newest {@code keep} checkpoints, and any partial or replaced one a killed run left behind.
     */
    public static void prune(Path checkpoints, int keep) {
        prune(checkpoints, keep, null);
    }

    /**
     * As above, never deleting {@code best} (train.metric_for_best_model's best checkpoint; null for none): as
     * transformers' trainer_utils.rotate_checkpoints, the newest and the best are kept, the oldest others deleted
     * until max(keep, 2 when they differ) are left. Without a best it deletes exactly what the above always did.
     */
    static void prune(Path checkpoints, int keep, Path best) {
        List<Path> all = list(checkpoints);
        try {
            Path newest = all.isEmpty() ? null : all.get(all.size() - 1);
            boolean bestKept = best != null && all.contains(best) && !best.equals(newest);
            int remaining = all.size();
            int toKeep = Math.max(keep, bestKept ? 2 : 1);
            for (Path checkpoint : all) {
                if (remaining <= toKeep) {
                    break;
                }
                if (!checkpoint.equals(newest) && !(bestKept && checkpoint.equals(best))) {
                    delete(checkpoint);
                    remaining--;
                }
            }
            try (DirectoryStream<Path> entries = Files.newDirectoryStream(checkpoints, "*.partial")) {
                for (Path partial : entries) {
                    if (isCheckpointDir(partial)) {
                        delete(partial);
                    }
                }
            }
            try (DirectoryStream<Path> entries = Files.newDirectoryStream(checkpoints, "*" + REPLACED)) {
                for (Path replaced : entries) {
                    String name = replaced.getFileName().toString();
                    Path stepN = replaced.resolveSibling(name.substring(0, name.length() - REPLACED.length()));
                    if (isCheckpointDir(replaced) && Files.exists(stepN)) {
                        delete(replaced); // its step-N was moved in: a kill came before it was deleted
                    }
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot prune " + checkpoints + ": " + e.getMessage(), e);
        }
    }

    /**
     * A checkpoint directory, whole, partial or replaced, by its name: {@code step-000040}, {@code step-000040.partial}
     * or {@code step-000040.replaced}.
     */
    static boolean isCheckpointDir(Path dir) {
        return Files.isDirectory(dir) && ANY_NAME.matcher(dir.getFileName().toString()).matches();
    }

    /**
     * Deletes what mixtune wrote of a checkpoint, whole or left partial by a kill: the state files, the files its
     * {@value #STATE_JSON} hashes, its adapters and temporary files; then the directory, unless someone else's files
     * are in it (they stay).
     */
    static void delete(Path dir) throws IOException {
        if (!Files.isDirectory(dir)) {
            return;
        }
        Set<String> own = ownNames(dir);
        for (String name : own) {
            // Files of the adapters (adapter/adapter_model.safetensors) go with their adapter below.
            boolean direct = name.indexOf('/') < 0 && !name.equals(".") && !name.equals("..");
            if (direct && Files.isRegularFile(dir.resolve(name))) {
                Files.delete(dir.resolve(name));
            }
        }
        for (Path entry : TrainingOutputs.list(dir)) {
            String name = entry.getFileName().toString();
            if (TrainingOutputs.isAdapterDir(entry)) {
                TrainingOutputs.deleteAdapter(entry);
            } else if (Files.isRegularFile(entry) && TrainingOutputs.isTemporary(name)) {
                Files.delete(entry);
            }
        }
        TrainingOutputs.deleteIfEmpty(dir);
    }

    /** The names of the files mixtune writes into a checkpoint: the state files and those its state hashes. */
    private static Set<String> ownNames(Path dir) {
        Set<String> own = new HashSet<>(List.of(STATE_JSON, STATE_TENSORS, REFERENCE_STATE));
        try {
            JSON.readTree(dir.resolve(STATE_JSON).toFile()).path("sha256").fieldNames().forEachRemaining(own::add);
        } catch (IOException | RuntimeException unreadable) {
            // A partial checkpoint has no state yet: the fixed names above are all it can hold besides adapters.
        }
        return own;
    }

    /** What {@link #delete} would leave of a checkpoint: the files and folders someone else put there. */
    private static List<Path> notWrittenByMixtune(Path dir) {
        Set<String> own = ownNames(dir);
        List<Path> others = new ArrayList<>();
        for (Path entry : TrainingOutputs.list(dir)) {
            String name = entry.getFileName().toString();
            if (TrainingOutputs.isAdapterDir(entry)) {
                TrainingOutputs.list(entry).stream().filter(file -> !TrainingOutputs.isAdapterFile(file))
                        .forEach(others::add);
            } else if (!Files.isRegularFile(entry) || !own.contains(name) && !TrainingOutputs.isTemporary(name)) {
                others.add(entry);
            }
        }
        return others;
    }

    private static List<Path> filesUnder(Path dir) throws IOException {
        try (Stream<Path> walk = Files.walk(dir)) {
            return walk.filter(Files::isRegularFile).sorted().toList();
        }
    }

    static String sha256(Path file) throws IOException {
        try (InputStream in = Files.newInputStream(file)) {
            MessageDigest digest = MessageDigest.getInstance("SHA-256");
            byte[] buffer = new byte[1 << 16];
            for (int n; (n = in.read(buffer)) > 0; ) {
                digest.update(buffer, 0, n);
            }
            return HexFormat.of().formatHex(digest.digest());
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
