package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.model.safetensors.SafetensorsReader;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A training run's checkpoints in step order (numeric, not by name), and swa/lawa/ema over the latest of them. */
class RunCheckpointsTest {
    private static final Path GOLDEN = MergeGoldenTest.GOLDEN;

    @TempDir
    Path dir;

    /** RUN/checkpoints/step-N holding golden model m_i: steps 5, 40 and 300 (names that sort wrongly as text). */
    private Path run() throws IOException {
        Path run = dir.resolve("run");
        long[] steps = {5, 40, 300};
        for (int i = 0; i < 3; i++) {
            Path step = Files.createDirectories(run.resolve("checkpoints").resolve("step-" + steps[i]));
            try (Stream<Path> files = Files.list(GOLDEN.resolve("checkpoints/m" + i))) {
                for (Path file : files.toList()) {
                    Files.copy(file, step.resolve(file.getFileName()));
                }
            }
        }
        Files.createDirectories(run.resolve("checkpoints/not-a-step"));
        return run;
    }

    @Test
    void listsStepsInNumericOrderAndPrefersTheAdapterDirectory() throws IOException {
        Path run = run();
        assertTrue(RunCheckpoints.isRun(run) && RunCheckpoints.isRun(run.resolve("checkpoints")));
        assertFalse(RunCheckpoints.isRun(GOLDEN.resolve("checkpoints/m0")));
        assertEquals(List.of(5L, 40L, 300L), RunCheckpoints.all(run).stream().map(RunCheckpoints.Checkpoint::step).toList());
        assertEquals(List.of(40L, 300L), RunCheckpoints.latest(run, 2).stream().map(RunCheckpoints.Checkpoint::step).toList());
        Files.createDirectories(run.resolve("checkpoints/step-300/adapter"));
        assertEquals(run.resolve("checkpoints/step-300/adapter"), RunCheckpoints.latest(run, 1).get(0).dir());
        IllegalArgumentException tooMany = assertThrows(IllegalArgumentException.class, () -> RunCheckpoints.latest(run, 4));
        assertTrue(tooMany.getMessage().contains("asked for the latest 4 checkpoints, but the run holds 3 (steps [5, 40,"
                + " 300])"), tooMany.getMessage());
    }

    /**
     * Training saves a step again by renaming the old copy to step-N.replaced first: killed between the two renames,
     * that copy is step N (TrainingCheckpoint lists it so); next to a step-N it is the old copy, not a checkpoint.
     */
    @Test
    void aReplacedStepCountsOnlyWhereItIsTheOnlyCopy() throws IOException {
        Path run = run();
        Path checkpoints = run.resolve("checkpoints");
        Files.move(checkpoints.resolve("step-300"), checkpoints.resolve("step-300.replaced"));
        assertEquals(List.of(5L, 40L, 300L), RunCheckpoints.all(run).stream().map(RunCheckpoints.Checkpoint::step).toList());
        assertEquals(checkpoints.resolve("step-300.replaced"), RunCheckpoints.latest(run, 1).get(0).dir());
        Files.createDirectories(checkpoints.resolve("step-300"));
        assertEquals(checkpoints.resolve("step-300"), RunCheckpoints.latest(run, 1).get(0).dir());
        assertEquals(3, RunCheckpoints.all(run).size());
    }

    @Test
    void lawaOverARunEqualsTheGoldenOfItsLatestTwo() throws IOException {
        Path out = dir.resolve("out");
        MergeConfig lawa = new MergeConfig(MergeMethod.LAWA, null, List.of(MergeConfig.Model.of(run())), null, 2, null,
                null, null, out);
        MergeReport report = ModelMerge.run(lawa, false, Long.MAX_VALUE);
        assertEquals(2, report.inputs().size());
        try (SafetensorsReader merged = SafetensorsReader.open(out);
                SafetensorsReader expected = SafetensorsReader.open(GOLDEN.resolve("expected/lawa-last2.safetensors"))) {
            for (String name : expected.names()) {
                MergeGoldenTest.assertClose(expected.readFloats(name), merged.readFloats(name),
                        io.mixtune.model.safetensors.DType.F32, name);
            }
        }
        MergeConfig resolved = MergeYaml.read(out.resolve(MergeYaml.RESOLVED_FILE));
        assertEquals(List.of(dir.resolve("run/checkpoints/step-40"), dir.resolve("run/checkpoints/step-300")),
                resolved.models().stream().map(MergeConfig.Model::model).toList(), "the resolved inputs are recorded");
    }

    @Test
    void onlyTheOrderedAveragesTakeARun() throws IOException {
        MergeConfig linear = new MergeConfig(MergeMethod.LINEAR, null, List.of(MergeConfig.Model.of(run())), null, null,
                null, null, null, dir.resolve("out"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ModelMerge.run(linear, false, Long.MAX_VALUE));
        assertTrue(e.getMessage().contains("is a training run (checkpoints/step-N): only swa, lawa and ema take one"),
                e.getMessage());
    }
}
