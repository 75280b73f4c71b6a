package io.mixtune.model.safetensors;

import java.nio.file.Path;
import java.util.Optional;

/**
 * A checkpoint on disk is missing, malformed, or not one this loader will read. The message always starts with the
 * file (and the tensor, where one is involved) so that a failure in a 19-shard checkpoint points at one place.
 */
public class CheckpointException extends RuntimeException {
    private final Path file;
    private final String tensor;

    public CheckpointException(Path file, String problem) {
        this(file, null, problem, null);
    }

    public CheckpointException(Path file, String tensor, String problem) {
        this(file, tensor, problem, null);
    }

    public CheckpointException(Path file, String tensor, String problem, Throwable cause) {
        super(file + (tensor == null ? "" : ": tensor '" + tensor + "'") + ": " + problem, cause);
        this.file = file;
        this.tensor = tensor;
    }

    /** The file or directory the problem was found in. */
    public Path file() {
        return file;
    }

    /** The tensor the problem concerns, if it concerns one. */
    public Optional<String> tensor() {
        return Optional.ofNullable(tensor);
    }
}
