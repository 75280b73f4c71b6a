package io.mixtune.merging;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * The checkpoints a training run keeps, {@code RUN/checkpoints/step-000100/} (a model) or
 * {@code RUN/checkpoints/step-000100/adapter/} (a PEFT adapter), in step order. SWA and LaWA average the latest k.
 */
public final class RunCheckpoints {
    public static final String CHECKPOINTS = "checkpoints";
    public static final String ADAPTER = "adapter";
    /** step-N, or step-N.replaced: the copy training renames aside while it saves step N again, step N while alone. */
    private static final Pattern STEP = Pattern.compile("step-(\\d+)(\\.replaced)?");

    private RunCheckpoints() {}

    /** One kept checkpoint: its step and the directory to read (the step's {@code adapter/} if it has one). */
    public record Checkpoint(long step, Path dir) {}

    /** Whether {@code dir} is a run directory (holds {@code checkpoints/step-N}) or its {@code checkpoints/}. */
    public static boolean isRun(Path dir) {
        Path checkpoints = checkpointsDir(dir);
        return checkpoints != null && !list(checkpoints).isEmpty();
    }

    /** Every checkpoint of the run, oldest first. */
    public static List<Checkpoint> all(Path run) {
        Path checkpoints = checkpointsDir(run);
        if (checkpoints == null) {
            throw new IllegalArgumentException(run + ": not a training run: expected " + CHECKPOINTS + "/step-N/ inside");
        }
        List<Checkpoint> found = list(checkpoints);
        if (found.isEmpty()) {
            throw new IllegalArgumentException(checkpoints + ": no step-N checkpoint directories in it");
        }
        return found;
    }

    /** The latest {@code k} checkpoints of the run, oldest first. */
    public static List<Checkpoint> latest(Path run, int k) {
        List<Checkpoint> found = all(run);
        if (k > found.size()) {
            throw new IllegalArgumentException(run + ": asked for the latest " + k + " checkpoints, but the run holds "
                    + found.size() + " (steps " + found.stream().map(c -> Long.toString(c.step())).toList() + ")");
        }
        return List.copyOf(found.subList(found.size() - k, found.size()));
    }

    private static Path checkpointsDir(Path dir) {
        if (Files.isDirectory(dir.resolve(CHECKPOINTS))) {
            return dir.resolve(CHECKPOINTS);
        }
        Path name = dir.getFileName();
        return name != null && name.toString().equals(CHECKPOINTS) && Files.isDirectory(dir) ? dir : null;
    }

    private static List<Checkpoint> list(Path checkpoints) {
        List<Checkpoint> found = new ArrayList<>();
        try (Stream<Path> entries = Files.list(checkpoints)) {
            for (Path entry : entries.filter(Files::isDirectory).toList()) {
                Matcher step = STEP.matcher(entry.getFileName().toString());
                // a kill between training's two renames leaves step-N.replaced as the only complete copy of step N
                if (step.matches() && (step.group(2) == null
                        || !Files.isDirectory(entry.resolveSibling("step-" + step.group(1))))) {
                    Path adapter = entry.resolve(ADAPTER);
                    found.add(new Checkpoint(Long.parseLong(step.group(1)), Files.isDirectory(adapter) ? adapter : entry));
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(checkpoints + ": cannot be listed: " + e.getMessage(), e);
        }
        found.sort(Comparator.comparingLong(Checkpoint::step));
        return found;
    }
}
