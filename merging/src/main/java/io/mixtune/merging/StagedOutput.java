package io.mixtune.merging;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.SecureRandom;
import java.util.Comparator;
import java.util.stream.Stream;

/**
 * The output directory of a merge, written as a sibling {@code OUT.tmp-<random>} and renamed to {@code OUT} only when
 * complete, so a crash or an error half way never leaves a half-merged model under the name the user asked for. The
 * staging directory is deleted on failure.
 */
final class StagedOutput implements AutoCloseable {
    private static final SecureRandom RANDOM = new SecureRandom();

    private final Path target;
    private final Path staging;
    private boolean committed;

    private StagedOutput(Path target, Path staging) {
        this.target = target;
        this.staging = staging;
    }

    /** Refuses an existing non-empty {@code target} unless {@code force}; call before any work is done. */
    static void requireWritable(Path target, boolean force) {
        if (Files.exists(target) && !Files.isDirectory(target)) {
            throw new IllegalArgumentException(target + ": exists and is not a directory");
        }
        if (!force && !isEmptyOrAbsent(target)) {
            throw new IllegalArgumentException(target + ": exists and is not empty; choose another out or pass --force"
                    + " to replace it");
        }
    }

    static StagedOutput create(Path target, boolean force) {
        requireWritable(target, force);
        Path absolute = target.toAbsolutePath().normalize();
        try {
            Files.createDirectories(absolute.getParent());
            Path staging = absolute.resolveSibling(absolute.getFileName() + ".tmp-" + Long.toHexString(RANDOM.nextLong()));
            Files.createDirectory(staging);
            return new StagedOutput(absolute, staging);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create a staging directory next to " + target + ": " + e.getMessage(), e);
        }
    }

    Path dir() {
        return staging;
    }

    /** Renames the staging directory to the target; a replaced target is moved aside first and then deleted. */
    void commit() {
        try {
            Path replaced = null;
            if (Files.exists(target)) {
                if (isEmptyOrAbsent(target)) {
                    Files.delete(target);
                } else {
                    replaced = target.resolveSibling(target.getFileName() + ".old-" + Long.toHexString(RANDOM.nextLong()));
                    move(target, replaced);
                }
            }
            move(staging, target);
            committed = true;
            if (replaced != null) {
                deleteRecursively(replaced);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot move the merged model from " + staging + " to " + target + ": "
                    + e.getMessage(), e);
        }
    }

    @Override
    public void close() {
        if (!committed) {
            try {
                deleteRecursively(staging);
            } catch (IOException ignored) {
                // A leftover OUT.tmp-* directory is plainly not the output; the original error matters more.
            }
        }
    }

    private static boolean isEmptyOrAbsent(Path dir) {
        if (!Files.isDirectory(dir)) {
            return true;
        }
        try (Stream<Path> entries = Files.list(dir)) {
            return entries.findAny().isEmpty();
        } catch (IOException e) {
            throw new UncheckedIOException(dir + ": cannot be listed: " + e.getMessage(), e);
        }
    }

    private static void move(Path from, Path to) throws IOException {
        try {
            Files.move(from, to, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(from, to);
        }
    }

    static void deleteRecursively(Path dir) throws IOException {
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
