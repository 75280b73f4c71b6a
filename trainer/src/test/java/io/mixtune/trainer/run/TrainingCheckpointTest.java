package io.mixtune.trainer.run;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import io.mixtune.model.nn.InPlaceCopy;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.LossScaler;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A checkpoint is written from the live arrays one tensor at a time, straight from their memory, and read back into
 * them the same way: the Java heap never holds the state. A Mixtral-8x7B adapter on every expert at r 16 is about 240M parameters, 0.96 GB per array in
 * float32, so a Java copy of the parameters, both AdamW moments and two averages (what a checkpoint held before) was
 * 4.8 GB of heap at every save.
 */
class TrainingCheckpointTest {
    private static final Shape SHAPE = new Shape(512, 1024); // 2 MiB of float32 per array

    @Test
    void savingAndRestoringCopyNoTensorIntoTheJavaHeap(@TempDir Path dir) {
        try (NDManager manager = NDManager.newBaseManager()) {
            List<NDArray> parameters = trainable(List.of(manager.randomNormal(SHAPE), manager.randomNormal(SHAPE),
                    manager.randomNormal(SHAPE)));
            AdamW optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0.0);
            List<NDArray> ema = parameters.stream().map(p -> p.mul(0.5f)).toList();
            long tensorBytes = SHAPE.size() * Float.BYTES;

            // Moments that are not zeros and a step count, so that restoring them is seen.
            for (int i = 0; i < parameters.size(); i++) {
                InPlaceCopy.copy(optimizer.firstMoments().get(i), manager.randomNormal(SHAPE));
                InPlaceCopy.copy(optimizer.secondMoments().get(i), manager.randomUniform(0, 1, SHAPE));
            }
            optimizer.restoreStepCount(5);
            // The first save loads the writer's classes (Jackson, SecureRandom: megabytes of one-time allocation).
            TrainingCheckpoint.save(dir, TrainingCheckpoint.Snapshot.of(6, parameters, optimizer, LossScaler.off(),
                    Map.of("ema", ema), OptionalLong.of(98)), partial -> {});
            long before = allocatedBytes();
            Path saved = TrainingCheckpoint.save(dir, TrainingCheckpoint.Snapshot.of(7, parameters, optimizer,
                    LossScaler.off(), Map.of("ema", ema), OptionalLong.of(99)), partial -> {});
            long allocated = allocatedBytes() - before;

            assertTrue(allocated < tensorBytes, "saving 12 arrays of " + tensorBytes + " bytes allocated " + allocated
                    + " bytes of Java heap");
            TrainingCheckpoint.load(saved, TrainingCheckpoint.shapesOf(parameters)); // loads the reader's classes
            List<NDArray> resumedParameters = trainable(List.of(manager.zeros(SHAPE), manager.zeros(SHAPE),
                    manager.zeros(SHAPE)));
            AdamW resumedOptimizer = new AdamW(resumedParameters, 0.9, 0.999, 1e-8, 0.0);
            LossScaler resumedScaler = LossScaler.dynamic();
            List<NDArray> resumedEma = resumedParameters.stream().map(p -> manager.zeros(SHAPE)).toList();

            before = allocatedBytes();
            TrainingCheckpoint.State loaded = TrainingCheckpoint.load(saved, TrainingCheckpoint.shapesOf(parameters));
            loaded.restore(resumedParameters, resumedOptimizer, resumedScaler);
            loaded.readAverage("ema", resumedEma);
            allocated = allocatedBytes() - before;

            assertTrue(allocated < tensorBytes, "restoring 12 arrays of " + tensorBytes + " bytes allocated "
                    + allocated + " bytes of Java heap");
            assertEquals(7, loaded.step());
            assertEquals(OptionalLong.of(99), loaded.numTokens());
            assertEquals(java.util.Set.of("ema"), loaded.averages());
            assertEquals(optimizer.stepCount(), resumedOptimizer.stepCount());
            assertEquals(LossScaler.off().state(), resumedScaler.state());
            for (int i = 0; i < parameters.size(); i++) {
                assertArrayEquals(parameters.get(i).toFloatArray(), resumedParameters.get(i).toFloatArray());
                assertArrayEquals(ema.get(i).toFloatArray(), resumedEma.get(i).toFloatArray());
                assertArrayEquals(optimizer.firstMoments().get(i).toFloatArray(),
                        resumedOptimizer.firstMoments().get(i).toFloatArray());
                assertArrayEquals(optimizer.secondMoments().get(i).toFloatArray(),
                        resumedOptimizer.secondMoments().get(i).toFloatArray());
            }
        }
    }

    /** What a kill -9 does to the saving thread: nothing after it runs, no catch or finally cleans up. */
    private static final class Killed extends Error {
        Killed() {
            super("killed", null, false, false);
        }
    }

    /**
     * The same step saved again (a run resumed from an older checkpoint reaches it anew) while a complete step-N is
     * there: a kill at any moment of the replacement leaves a complete checkpoint of that step that resume finds (the
     * old one or the new one). Before, the old step-N was deleted before the new one was moved in: a kill between the
     * two left none.
     */
    @Test
    void aKillWhileTheSameStepIsSavedAgainLeavesACompleteCheckpointOfIt(@TempDir Path dir) throws Exception {
        try (NDManager manager = NDManager.newBaseManager()) {
            Shape shape = new Shape(2, 3);
            List<NDArray> parameters = trainable(List.of(manager.ones(shape)));
            AdamW optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0.0);
            TrainingCheckpoint.save(dir, snapshot(7, parameters, optimizer), partial -> {});
            InPlaceCopy.copy(parameters.get(0), manager.full(shape, 2f));

            // killed just before the new checkpoint is moved into place
            TrainingCheckpoint.Rename killedBeforeMoveIn = (from, to) -> {
                if (from.getFileName().toString().endsWith(".partial")) {
                    throw new Killed();
                }
                Files.move(from, to, StandardCopyOption.ATOMIC_MOVE);
            };
            assertThrows(Killed.class, () -> TrainingCheckpoint.save(dir, snapshot(7, parameters, optimizer),
                    partial -> {}, killedBeforeMoveIn));
            assertEquals(1f, savedParameter(dir, shape), "the old step 7 is what resume finds");

            // the resumed run saves step 7 again: the old copy is gone once the new one is in place
            TrainingCheckpoint.save(dir, snapshot(7, parameters, optimizer), partial -> {});
            assertEquals(2f, savedParameter(dir, shape));
            assertEquals(List.of("step-000007"), names(dir));

            // killed just after the new checkpoint is moved into place, before the old one is deleted
            InPlaceCopy.copy(parameters.get(0), manager.full(shape, 3f));
            TrainingCheckpoint.Rename killedAfterMoveIn = (from, to) -> {
                Files.move(from, to, StandardCopyOption.ATOMIC_MOVE);
                if (from.getFileName().toString().endsWith(".partial")) {
                    throw new Killed();
                }
            };
            assertThrows(Killed.class, () -> TrainingCheckpoint.save(dir, snapshot(7, parameters, optimizer),
                    partial -> {}, killedAfterMoveIn));
            assertEquals(3f, savedParameter(dir, shape), "the new step 7 is what resume finds");
            TrainingCheckpoint.prune(dir, 5); // as after the next save: what the kill left is tidied away
            assertEquals(List.of("step-000007"), names(dir));
            assertEquals(3f, savedParameter(dir, shape));
        }
    }

    /**
     * A file of the user's in checkpoints/step-N refuses saving step N again before anything is deleted; before, the
     * checkpoint's own files were deleted first and the refusal came after, leaving no step N.
     */
    @Test
    void aFileOfTheUsersInTheStepSavedAgainRefusesBeforeDeletingAnything(@TempDir Path dir) throws Exception {
        try (NDManager manager = NDManager.newBaseManager()) {
            List<NDArray> parameters = trainable(List.of(manager.ones(new Shape(2, 3))));
            AdamW optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0.0);
            Path saved = TrainingCheckpoint.save(dir, snapshot(7, parameters, optimizer), partial -> {});
            Files.writeString(saved.resolve("notes.txt"), "mine");

            UncheckedIOException refused = assertThrows(UncheckedIOException.class,
                    () -> TrainingCheckpoint.save(dir, snapshot(7, parameters, optimizer), partial -> {}));
            assertTrue(refused.getMessage().contains("notes.txt"), refused.getMessage());
            assertEquals(null, TrainingCheckpoint.verify(saved), "step 7 stays whole");
            assertEquals("mine", Files.readString(saved.resolve("notes.txt")));
        }
    }

    private static TrainingCheckpoint.Snapshot snapshot(long step, List<NDArray> parameters, AdamW optimizer) {
        return TrainingCheckpoint.Snapshot.of(step, parameters, optimizer, LossScaler.off(), Map.of(),
                OptionalLong.empty());
    }

    /** The first parameter's first value in the one complete checkpoint resume finds, which must verify. */
    private static float savedParameter(Path checkpoints, Shape shape) {
        List<Path> found = TrainingCheckpoint.list(checkpoints);
        assertEquals(1, found.size(), "complete checkpoints: " + found);
        assertEquals(7, TrainingCheckpoint.load(found.get(0), List.of(shape.getShape())).step());
        assertEquals(null, TrainingCheckpoint.verify(found.get(0)));
        try (NDManager manager = NDManager.newBaseManager()) {
            NDArray into = manager.zeros(shape);
            TrainingCheckpoint.load(found.get(0), List.of(shape.getShape())).restoreParameters(List.of(into));
            return into.toFloatArray()[0];
        }
    }

    private static List<String> names(Path dir) throws IOException {
        try (Stream<Path> entries = Files.list(dir)) {
            return entries.map(path -> path.getFileName().toString()).sorted().toList();
        }
    }

    private static List<NDArray> trainable(List<NDArray> arrays) {
        arrays.forEach(array -> array.setRequiresGradient(true));
        return arrays;
    }

    /** Bytes this thread has allocated on the Java heap so far (HotSpot counts them per thread). */
    private static long allocatedBytes() {
        return ((com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean()).getCurrentThreadAllocatedBytes();
    }
}
