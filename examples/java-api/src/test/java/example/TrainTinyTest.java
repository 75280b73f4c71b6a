package example;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class TrainTinyTest {
    @Test
    void aJavaApplicationTrainsAndHearsEveryStep(@TempDir Path out) {
        TrainTiny.Outcome outcome = TrainTiny.train(Path.of("../.."), out.resolve("run"), 4);
        assertEquals(List.of(1L, 2L, 3L, 4L), outcome.steps());
        assertTrue(outcome.losses().stream().allMatch(loss -> loss > 0 && Double.isFinite(loss)), outcome.toString());
        assertEquals(2, outcome.evalLosses().size(), "before the first step and after the last");
        assertTrue(outcome.evalLosses().get(1) < outcome.evalLosses().get(0), "the loss fell: " + outcome);
        assertTrue(Files.isRegularFile(outcome.result().adapterDir().resolve("adapter_model.safetensors")));
        assertEquals(4, outcome.result().steps());
    }
}
