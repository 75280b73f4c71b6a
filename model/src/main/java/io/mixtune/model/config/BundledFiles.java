package io.mixtune.model.config;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.file.FileSystemAlreadyExistsException;
import java.nio.file.FileSystems;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Stream;

/**
 * Files that travel inside the mixtune jars as classpath resources ({@code configs/}, {@code recipes/},
 * {@code data/samples/}), seen as {@link Path}s so that code written for files on disk reads them too: in a build they
 * are plain files under target/classes, in a jar they live in the jar's zip file system (opened once, kept open).
 */
public final class BundledFiles {
    private BundledFiles() {}

    /**
     * The bundled file or folder of that relative name ("recipes/quickstart.yaml"), or empty when none is bundled.
     * Absolute names and names that climb out ("../x") are never looked up.
     */
    public static Optional<Path> find(String name) {
        String normalized = Path.of(name).normalize().toString().replace('\\', '/');
        if (normalized.isEmpty() || normalized.startsWith("/") || normalized.startsWith("..")) {
            return Optional.empty();
        }
        URL url = BundledFiles.class.getClassLoader().getResource(normalized);
        if (url == null) {
            return Optional.empty();
        }
        try {
            URI uri = url.toURI();
            if ("jar".equals(uri.getScheme())) {
                openJar(uri);
            }
            return Optional.of(Path.of(uri));
        } catch (URISyntaxException e) {
            throw new IllegalStateException("bundled " + normalized + " has no usable address " + url, e);
        }
    }

    /** The names of the regular files directly in a bundled folder, sorted; empty when the folder is not bundled. */
    public static List<String> list(String folder) {
        Optional<Path> dir = find(folder);
        if (dir.isEmpty() || !Files.isDirectory(dir.get())) {
            return List.of();
        }
        try (Stream<Path> files = Files.list(dir.get())) {
            return files.filter(Files::isRegularFile).map(p -> p.getFileName().toString())
                    .sorted().toList();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot list bundled " + folder + ": " + e.getMessage(), e);
        }
    }

    private static synchronized void openJar(URI uri) {
        try {
            FileSystems.newFileSystem(uri, Map.of());
        } catch (FileSystemAlreadyExistsException e) {
            // opened by an earlier lookup: Path.of(uri) finds it
        } catch (IOException e) {
            throw new UncheckedIOException("cannot open the jar of " + uri + ": " + e.getMessage(), e);
        }
    }
}
