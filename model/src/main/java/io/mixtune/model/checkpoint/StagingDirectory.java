package io.mixtune.model.checkpoint;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * A directory written beside its target, {@code TARGET.<kind>-<pid>-<random>}, and renamed to TARGET when complete.
 * The name carries the writing process's id, so that a later run can tell what a killed one left (its process is
 * gone) from what a live one is writing, and delete only the former: nothing else is ever taken for a leftover.
 */
public final class StagingDirectory {
    private static final SecureRandom RANDOM = new SecureRandom();

    private StagingDirectory() {}

    /** Creates a fresh staging directory beside {@code target}, named for this process. */
    public static Path create(Path target, String kind) {
        Path absolute = target.toAbsolutePath().normalize();
        try {
            Files.createDirectories(absolute.getParent());
            Path staging = absolute.resolveSibling(absolute.getFileName() + "." + kind + "-"
                    + ProcessHandle.current().pid() + "-" + Long.toHexString(RANDOM.nextLong() >>> 1));
            return Files.createDirectory(staging);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create a staging directory next to " + target + ": "
                    + e.getMessage(), e);
        }
    }

    /**
     * Deletes the staging directories of {@code target} that processes no longer running left behind (killed, or the
     * machine restarted); returns them. Those of live processes, and anything not named as {@link #create} names, stay.
     */
    public static List<Path> deleteAbandoned(Path target, String kind) {
        Path absolute = target.toAbsolutePath().normalize();
        Pattern name = Pattern.compile(Pattern.quote(absolute.getFileName() + "." + kind + "-") + "(\\d+)-[0-9a-f]+");
        List<Path> deleted = new ArrayList<>();
        if (!Files.isDirectory(absolute.getParent())) {
            return deleted;
        }
        try (DirectoryStream<Path> siblings = Files.newDirectoryStream(absolute.getParent())) {
            for (Path sibling : siblings) {
                Matcher matcher = name.matcher(sibling.getFileName().toString());
                if (matcher.matches() && Files.isDirectory(sibling) && !isRunning(Long.parseLong(matcher.group(1)))) {
                    deleteRecursively(sibling);
                    deleted.add(sibling);
                }
            }
        } catch (IOException | NumberFormatException e) {
            throw new UncheckedIOException("cannot clean up beside " + target + ": " + e.getMessage(),
                    e instanceof IOException io ? io : new IOException(e));
        }
        return deleted;
    }

    private static boolean isRunning(long pid) {
        return ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false);
    }

    /** Whether {@code dir} is missing or holds nothing: an output directory that may be written without --force. */
    public static boolean isEmptyOrAbsent(Path dir) {
        if (!Files.isDirectory(dir)) {
            return true;
        }
        try (Stream<Path> entries = Files.list(dir)) {
            return entries.findAny().isEmpty();
        } catch (IOException e) {
            throw new UncheckedIOException(dir + ": cannot be listed: " + e.getMessage(), e);
        }
    }

    /** Deletes a directory mixtune wrote whole (a staging directory), with everything in it. */
    public static void deleteRecursively(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return;
        }
        try (Stream<Path> walk = Files.walk(dir)) {
            for (Path path : walk.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(path);
            }
        }
    }
}
