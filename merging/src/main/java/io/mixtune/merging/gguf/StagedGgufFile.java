package io.mixtune.merging.gguf;

import io.mixtune.model.checkpoint.StagingDirectory;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * Writes a GGUF file in a staging directory beside {@code out} and renames it into place when complete, so a killed
 * export leaves no half file under the user's name; the staging directory a killed export left is deleted by the next
 * export to the same {@code out}.
 */
final class StagedGgufFile {
    private static final String KIND = "gguf-staging";

    private StagedGgufFile() {}

    static void write(GgufWriter writer, Path out) throws IOException {
        StagingDirectory.deleteAbandoned(out, KIND);
        Path staging = StagingDirectory.create(out, KIND);
        try {
            Path file = staging.resolve(out.getFileName());
            writer.write(file);
            Files.move(file, out.toAbsolutePath().normalize(), StandardCopyOption.REPLACE_EXISTING,
                    StandardCopyOption.ATOMIC_MOVE);
        } finally {
            StagingDirectory.deleteRecursively(staging);
        }
    }
}
