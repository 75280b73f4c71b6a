package io.mixtune.trainer.sft;

import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/** What a training run writes besides checkpoints and metrics: adapters replaced whole, the resolved recipe. */
public final class TrainingOutputs {
    private TrainingOutputs() {}

    /** output_dir, created if need be. */
    public static Path outputDir(Recipe recipe) {
        Path outputDir = Path.of(recipe.outputDir());
        try {
            Files.createDirectories(outputDir);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create output_dir " + outputDir + ": " + e.getMessage(), e);
        }
        return outputDir;
    }

    /** Writes an adapter in PEFT's format to {@code adapterDir}, replaced whole: written beside it, then renamed. */
    public static Path writeAdapter(LoraModel lora, String adapterName, Path adapterDir, Path baseModelDir) {
        Path partial = adapterDir.resolveSibling(adapterDir.getFileName() + ".partial");
        try {
            TrainingCheckpoint.deleteRecursively(partial);
            PeftAdapter.save(lora, adapterName, partial, baseModelDir.toAbsolutePath().toString());
            TrainingCheckpoint.deleteRecursively(adapterDir);
            Files.move(partial, adapterDir, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + adapterDir + ": " + e.getMessage(), e);
        }
        return adapterDir;
    }

    /** output_dir/recipe.yaml: the recipe with every default filled in. */
    public static void writeResolvedRecipe(Recipe recipe, Path outputDir) {
        try {
            Files.writeString(outputDir.resolve("recipe.yaml"), RecipeReader.toYaml(recipe), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + outputDir.resolve("recipe.yaml") + ": " + e.getMessage(), e);
        }
    }

    /** Resident memory of this process (the JVM heap plus libtorch's native arrays), from /proc. */
    public static long residentMegabytes() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmRSS:")) {
                    return Long.parseLong(line.replaceAll("\\D", "")) / 1024;
                }
            }
        } catch (IOException | NumberFormatException e) {
            // not Linux: no figure
        }
        return -1;
    }
}
