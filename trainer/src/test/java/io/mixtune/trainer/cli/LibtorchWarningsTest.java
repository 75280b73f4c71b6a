package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * libtorch's own warnings ("[W1206 10:15:24 LegacyTypeDispatch.h:74] Warning: AutoNonVariableTypeMode is deprecated")
 * never reach the terminal. libtorch prints them once per process, from native code, so only a new process shows
 * them: a two-stage DPO run, which copies the policy into the reference adapter in place between the stages (where
 * DJL's NDArray.set printed that warning), through the CLI in its own JVM.
 */
class LibtorchWarningsTest {
    @TempDir
    Path dir;

    @Test
    void aTwoStageDpoRunPrintsNoLibtorchWarning() throws IOException, InterruptedException {
        Path pairs = TrainDpoTest.pairs(dir, 8);
        List<String> args = TrainDpoTest.train(dir, pairs, "train.max_steps=1", "train.warmup_steps=0",
                "dpo.stages=2");
        Process run = TrainCommandTest.mixtune(dir, args.toArray(String[]::new));
        assertTrue(run.waitFor(300, TimeUnit.SECONDS), "the run ends");
        String log = Files.readString(dir.resolve("log.txt"));
        assertEquals(0, run.exitValue(), log);
        assertTrue(log.contains("stage 2"), "both stages ran:\n" + log);
        assertFalse(log.contains("] Warning:") || log.contains("AutoNonVariableTypeMode"), log);
    }
}
