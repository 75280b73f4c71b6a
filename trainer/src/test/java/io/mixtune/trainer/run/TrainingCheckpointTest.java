package io.mixtune.trainer.run;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.LossScaler;
import java.lang.management.ManagementFactory;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A checkpoint is written from the live arrays one tensor at a time, straight from their memory: the Java heap never
 * holds the state. A Mixtral-8x7B adapter on every expert at r 16 is about 240M parameters, 0.96 GB per array in
 * float32, so a Java copy of the parameters, both AdamW moments and two averages (what a checkpoint held before) was
 * 4.8 GB of heap at every save.
 */
class TrainingCheckpointTest {
    private static final Shape SHAPE = new Shape(512, 1024); // 2 MiB of float32 per array

    @Test
    void savingCopiesNoTensorIntoTheJavaHeap(@TempDir Path dir) {
        try (NDManager manager = NDManager.newBaseManager()) {
            List<NDArray> parameters = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                NDArray parameter = manager.randomNormal(SHAPE);
                parameter.setRequiresGradient(true);
                parameters.add(parameter);
            }
            AdamW optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0.0);
            List<NDArray> ema = parameters.stream().map(p -> p.mul(0.5f)).toList();
            long tensorBytes = SHAPE.size() * Float.BYTES;

            // The first save loads the writer's classes (Jackson, SecureRandom: megabytes of one-time allocation).
            TrainingCheckpoint.save(dir, TrainingCheckpoint.Snapshot.of(6, parameters, optimizer, LossScaler.off(),
                    Map.of("ema", ema), OptionalLong.of(98)), partial -> {});
            long before = allocatedBytes();
            Path saved = TrainingCheckpoint.save(dir, TrainingCheckpoint.Snapshot.of(7, parameters, optimizer,
                    LossScaler.off(), Map.of("ema", ema), OptionalLong.of(99)), partial -> {});
            long allocated = allocatedBytes() - before;

            assertTrue(allocated < tensorBytes, "saving 12 arrays of " + tensorBytes + " bytes allocated " + allocated
                    + " bytes of Java heap");
            TrainingCheckpoint.State loaded = TrainingCheckpoint.load(saved, TrainingCheckpoint.shapesOf(parameters));
            assertEquals(7, loaded.step());
            assertEquals(OptionalLong.of(99), loaded.numTokens());
            for (int i = 0; i < parameters.size(); i++) {
                assertArrayEquals(parameters.get(i).toFloatArray(), loaded.parameters().get(i));
                assertArrayEquals(ema.get(i).toFloatArray(), loaded.averages().get("ema").get(i));
                assertArrayEquals(new float[(int) SHAPE.size()], loaded.firstMoments().get(i));
            }
        }
    }

    /** Bytes this thread has allocated on the Java heap so far (HotSpot counts them per thread). */
    private static long allocatedBytes() {
        return ((com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean()).getCurrentThreadAllocatedBytes();
    }
}
