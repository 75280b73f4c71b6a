package io.mixtune.trainer.run;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import io.mixtune.model.nn.InPlaceCopy;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.LossScaler;
import java.lang.management.ManagementFactory;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
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

    private static List<NDArray> trainable(List<NDArray> arrays) {
        arrays.forEach(array -> array.setRequiresGradient(true));
        return arrays;
    }

    /** Bytes this thread has allocated on the Java heap so far (HotSpot counts them per thread). */
    private static long allocatedBytes() {
        return ((com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean()).getCurrentThreadAllocatedBytes();
    }
}
