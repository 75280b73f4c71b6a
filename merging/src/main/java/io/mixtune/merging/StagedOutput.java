package io.mixtune.merging;

import io.mixtune.model.checkpoint.StagingDirectory;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * The output directory of a merge, written as a sibling {@code OUT.tmp-<pid>-<random>} ({@link StagingDirectory}) and
 * renamed to {@code OUT} only when complete, so a crash or an error half way never leaves a half-merged model under the
 * name the user asked for. The staging directory is deleted on failure, and by the next merge into OUT when a kill
 * left it.
 */
final class StagedOutput implements AutoCloseable {
    private static final String STAGING = "tmp";
    private static final String REPLACED = "old";

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
        if (!force && !StagingDirectory.isEmptyOrAbsent(target)) {
            throw new IllegalArgumentException(target + ": exists and is not empty; choose another out or pass --force"
                    + " to replace it");
        }
    }

    /**
     * A fresh staging directory beside {@code target}, after deleting what merges into the same target that were
     * killed left there (their staging or moved-aside directories; never those of a merge still running).
     */
    static StagedOutput create(Path target, boolean force) {
        requireWritable(target, force);
        StagingDirectory.deleteAbandoned(target, STAGING);
        StagingDirectory.deleteAbandoned(target, REPLACED);
        return new StagedOutput(target.toAbsolutePath().normalize(), StagingDirectory.create(target, STAGING));
    }

    Path dir() {
        return staging;
    }

    /** Renames the staging directory to the target; a replaced target is moved aside first and then deleted. */
    void commit() {
        try {
            Path replaced = null;
            if (Files.exists(target)) {
                if (StagingDirectory.isEmptyOrAbsent(target)) {
                    Files.delete(target);
                } else {
                    replaced = StagingDirectory.create(target, REPLACED);
                    Files.delete(replaced); // only its name: the replaced target is renamed to it
                    move(target, replaced);
                }
            }
            move(staging, target);
            committed = true;
            if (replaced != null) {
                StagingDirectory.deleteRecursively(replaced);
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
                StagingDirectory.deleteRecursively(staging);
            } catch (IOException ignored) {
                // A leftover OUT.tmp-* directory is plainly not the output; the original error matters more.
            }
        }
    }

    private static void move(Path from, Path to) throws IOException {
        try {
            Files.move(from, to, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(from, to);
        }
    }
}
