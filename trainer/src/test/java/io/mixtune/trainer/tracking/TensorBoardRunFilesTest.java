package io.mixtune.trainer.tracking;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import io.mixtune.trainer.run.TrainingOutputs;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** output_dir/runs/ is part of the run: it marks a run a fresh start refuses, and --force deletes its event files. */
class TensorBoardRunFilesTest {
    @Test
    void eventFilesAreARunsOutputAndForceDeletesOnlyThem(@TempDir Path out) throws Exception {
        try (TensorBoardWriter writer = TensorBoardWriter.open(out.resolve(TensorBoardMetrics.RUNS_DIR), 0)) {
            writer.scalar("loss", 1, 2.0);
        }
        assertEquals(List.of("runs/"), TrainingOutputs.runOutputs(out));

        TrainingOutputs.deleteRun(out);
        assertFalse(Files.exists(out.resolve("runs")), "runs/ held only event files: gone with them");

        Path runs = Files.createDirectories(out.resolve("runs"));
        Files.writeString(runs.resolve("notes.txt"), "the user's");
        TensorBoardWriter.open(runs, 0).close();
        TrainingOutputs.deleteRun(out);
        try (Stream<Path> left = Files.list(runs)) {
            assertEquals(List.of(runs.resolve("notes.txt")), left.toList(), "a file of the user's stays");
        }
        assertEquals(List.of(), TrainingOutputs.runOutputs(out), "runs/ without event files is no run");
    }
}
