package io.mixtune.model.checkpoint;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * How an output directory lies relative to an input: a command that writes {@code out} (and with --force replaces it)
 * must never write over, into or around one of its inputs. Paths are compared after resolving symbolic links, so
 * two names for one directory are the same directory.
 */
public enum PathOverlap {
    NONE(null),
    SAME("is"),
    OUT_INSIDE_INPUT("is inside"),
    OUT_CONTAINS_INPUT("contains");

    private final String relation;

    PathOverlap(String relation) {
        this.relation = relation;
    }

    public static PathOverlap of(Path out, Path input) {
        Path o = real(out);
        Path i = real(input);
        if (o.equals(i)) {
            return SAME;
        }
        if (o.startsWith(i)) {
            return OUT_INSIDE_INPUT;
        }
        return i.startsWith(o) ? OUT_CONTAINS_INPUT : NONE;
    }

    /** Null when they do not overlap, else "KEY OUT contains the input INPUT: ..." in the caller's words. */
    public static String problem(String outName, Path out, Path input) {
        PathOverlap overlap = of(out, input);
        return overlap == NONE ? null : outName + " " + out + " " + overlap.relation + " the input " + input
                + ": mixtune never writes over, into or around an input; choose another " + outName;
    }

    /**
     * Where {@code path} lies inside {@code dir}, relative to it ({@code adapter/adapter_config.json}), or null when
     * it does not (or is {@code dir} itself); links resolved as {@link #of} resolves them.
     */
    public static Path inside(Path dir, Path path) {
        Path d = real(dir);
        Path p = real(path);
        return p.startsWith(d) && !p.equals(d) ? d.relativize(p) : null;
    }

    /** The absolute path with symbolic links resolved as far as it exists. */
    private static Path real(Path path) {
        Path absolute = path.toAbsolutePath().normalize();
        Path existing = absolute;
        while (existing != null && !Files.exists(existing)) {
            existing = existing.getParent();
        }
        if (existing == null) {
            return absolute;
        }
        try {
            return existing.toRealPath().resolve(existing.relativize(absolute)).normalize();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot resolve " + path + ": " + e.getMessage(), e);
        }
    }
}
