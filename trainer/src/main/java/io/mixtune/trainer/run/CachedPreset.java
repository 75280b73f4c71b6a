package io.mixtune.trainer.run;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.checkpoint.StagingDirectory;
import io.mixtune.model.safetensors.DType;
import io.mixtune.trainer.PresetCheckpoint;
import io.mixtune.trainer.Refusal;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Locale;

/**
 * A preset written once into output_dir/base-model for training (random weights, a function of the preset alone), with
 * a marker saying which preset, seed and dtype wrote it: a recipe that names another preset is refused instead of
 * silently training on the first one's weights, and only a base-model mixtune wrote is ever replaced.
 */
public final class CachedPreset {
    public static final String MARKER_FILE = "mixtune-preset.json";
    private static final String STAGING = "partial";
    private static final String FILES = "files";
    private static final long SEED = 0;
    private static final DType DTYPE = DType.BF16;
    private static final ObjectMapper JSON = new ObjectMapper();

    private CachedPreset() {}

    /** What a cached preset was written with, as its marker records it (which also lists the files written). */
    @JsonIgnoreProperties(ignoreUnknown = true)
    public record Written(String preset, long seed, DType dtype) {
        static Written of(String preset) {
            return new Written(preset, SEED, DTYPE);
        }

        String describe() {
            return preset + " (seed " + seed + ", " + dtype.name().toLowerCase(Locale.ROOT) + ")";
        }
    }

    /**
     * Writes {@code preset} into {@code dir} unless it holds it already: into a staging directory of this process,
     * the marker last, renamed into place when complete, so a killed run never leaves a half-written base-model.
     */
    public static void ensure(String preset, Path dir) {
        ensure("model.preset", preset, dir);
    }

    /** As {@link #ensure(String, Path)} for the preset of recipe key {@code key} (a distillation teacher's). */
    public static void ensure(String key, String preset, Path dir) {
        if (require(key, preset, dir)) {
            return;
        }
        StagingDirectory.deleteAbandoned(dir, STAGING);
        Path staging = StagingDirectory.create(dir, STAGING);
        try {
            PresetCheckpoint.write(preset, staging, SEED, DTYPE);
            ObjectNode marker = JSON.valueToTree(Written.of(preset));
            ArrayNode files = marker.putArray(FILES);
            TrainingOutputs.list(staging).forEach(file -> files.add(file.getFileName().toString()));
            JSON.writerWithDefaultPrettyPrinter().writeValue(staging.resolve(MARKER_FILE).toFile(), marker);
            Files.move(staging, dir.toAbsolutePath().normalize(), StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            if (Files.exists(dir) && require(key, preset, dir)) {
                deleteQuietly(staging); // another process wrote the same preset first
                return;
            }
            throw new UncheckedIOException("cannot write the preset " + preset + " to " + dir + ": " + e.getMessage(),
                    e);
        }
    }

    /**
     * Whether {@code dir} holds {@code preset} as {@link #ensure} writes it; false when there is no {@code dir}. A
     * {@code dir} holding another preset, or one mixtune did not write, is refused.
     */
    public static boolean require(String preset, Path dir) {
        return require("model.preset", preset, dir);
    }

    private static boolean require(String key, String preset, Path dir) {
        if (!Files.exists(dir)) {
            return false;
        }
        Written wanted = Written.of(preset);
        Written found = writtenIn(dir);
        if (found == null) {
            throw new Refusal(dir + " was not written by mixtune for " + key + " " + preset + " (it has no "
                    + MARKER_FILE + "): move it away or use another output_dir, and mixtune writes the preset there "
                    + "(mixtune never deletes a " + dir.getFileName() + " it did not write)");
        }
        if (!found.equals(wanted)) {
            throw new Refusal(dir + " holds the preset " + found.describe() + ", but " + key + " is "
                    + wanted.describe() + ": use another output_dir, or train --force to replace it");
        }
        return true;
    }

    private static void deleteQuietly(Path staging) {
        try {
            StagingDirectory.deleteRecursively(staging);
        } catch (IOException ignored) {
            // Named for this process: the next run deletes it once this one has ended.
        }
    }

    /**
     * For a run started over (--force): deletes {@code dir} when mixtune wrote it for a preset other than
     * {@code preset}, the files its marker lists and nothing else; the same preset is kept (the same bytes).
     */
    public static void deleteIfOther(String preset, Path dir) {
        Written found = writtenIn(dir);
        if (found == null || found.equals(Written.of(preset))) {
            return;
        }
        try {
            for (JsonNode name : JSON.readTree(dir.resolve(MARKER_FILE).toFile()).path(FILES)) {
                Path file = dir.resolve(name.asText()).normalize();
                if (file.getParent().equals(dir.normalize())) {
                    Files.deleteIfExists(file);
                }
            }
            Files.delete(dir.resolve(MARKER_FILE));
            TrainingOutputs.deleteIfEmpty(dir);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot delete " + dir + ": " + e.getMessage(), e);
        }
    }

    /** What mixtune wrote {@code dir} with, or null when it holds no readable marker. */
    public static Written writtenIn(Path dir) {
        Path marker = dir.resolve(MARKER_FILE);
        if (!Files.isRegularFile(marker)) {
            return null;
        }
        try {
            return JSON.readValue(marker.toFile(), Written.class);
        } catch (IOException | RuntimeException e) {
            return null;
        }
    }
}
