package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** `mixtune env` and the device choice, on this CPU-only machine (the GPU side is bench/gpu's to check). */
class EnvCommandTest {

    @Test
    void envPrintsTheCpuLibtorchItsFolderTheComputeTypeAndTheGpuSteps() {
        MixtuneCliTest.Result env = MixtuneCliTest.run("env");
        assertEquals(0, env.code(), env.err());
        String out = env.out();
        assertTrue(out.contains("java       " + System.getProperty("java.version")), out);
        assertTrue(out.contains("djl        0.35.1, engine PyTorch"), out);
        assertTrue(out.lines().anyMatch(l -> l.startsWith("libtorch   2.7.1, flavor cpu, loaded from ")
                && l.endsWith("2.7.1-20250812-cpu-linux-x86_64 (the bundled pytorch-native-cpu, extracted by DJL)")),
                out);
        assertTrue(out.contains("no usable GPU: libtorch 2.7.1 loaded from "), out);
        assertTrue(out.contains("device auto -> cpu: compute_dtype auto = fp32"), out);
        assertTrue(out.contains("export PYTORCH_VERSION=2.7.1 PYTORCH_FLAVOR=cu128"), out);
        assertTrue(out.contains("mixtune env --allow-download"), out);
    }

    @Test
    void deviceGpuWithoutAGpuStopsBeforeAnythingIsWrittenWithTheSteps(@TempDir Path dir) {
        Path output = dir.resolve("out");
        MixtuneCliTest.Result train = MixtuneCliTest.run("train", "--recipe", "../recipes/quickstart.yaml",
                "--set", "model.device=gpu", "--set", "output_dir=" + output);
        assertEquals(2, train.code(), train.err());
        assertEquals(1, train.err().strip().lines().count(), train.err());
        assertTrue(train.err().contains("model.device: gpu asked for, but libtorch 2.7.1 loaded from "), train.err());
        assertTrue(train.err().contains("PYTORCH_LIBRARY_PATH") && train.err().contains("--allow-download"),
                train.err());
        assertFalse(Files.exists(output), "nothing written");
        MixtuneCliTest.Result dpo = MixtuneCliTest.run("train", "--recipe", "../recipes/quickstart-dpo.yaml",
                "--set", "model.device=gpu", "--set", "output_dir=" + output);
        assertEquals(2, dpo.code(), dpo.err());
        assertFalse(Files.exists(output), "nothing written");

        MixtuneCliTest.Result generate = MixtuneCliTest.run("generate", "--model", dir.toString(), "--prompt-ids", "1",
                "--device", "gpu");
        assertEquals(2, generate.code(), generate.err());
        assertTrue(generate.err().contains("--device: gpu asked for"), generate.err());
        MixtuneCliTest.Result bad = MixtuneCliTest.run("eval", "--model", dir.toString(), "--data", "x",
                "--device", "tpu");
        assertEquals(2, bad.code(), bad.err());
        assertTrue(bad.err().contains("--device expects auto, cpu or gpu, got 'tpu'"), bad.err());
    }

    /**
     * --allow-download takes DJL's download route (the bundled CPU libtorch hidden): with DJL_OFFLINE forcing DJL
     * offline it fails on the index file, named in one line; without the switch nothing is fetched.
     */
    @Test
    void allowDownloadTakesDjlsDownloadRoute(@TempDir Path dir) throws IOException, InterruptedException {
        List<String> command = List.of(ProcessHandle.current().info().command().orElse("java"), "-Dai.djl.offline=true",
                "-cp", System.getProperty("java.class.path"), Mixtune.class.getName(), "env", "--allow-download");
        ProcessBuilder builder = new ProcessBuilder(command).redirectErrorStream(true)
                .redirectOutput(dir.resolve("log.txt").toFile());
        builder.environment().put("DJL_OFFLINE", "true"); // never a real download from a test
        builder.environment().put("ENGINE_CACHE_DIR", dir.resolve("cache").toString());
        builder.environment().remove("PYTORCH_LIBRARY_PATH");
        builder.environment().remove("MIXTUNE_ALLOW_DOWNLOAD");
        Process process = builder.start();
        assertTrue(process.waitFor(120, TimeUnit.SECONDS));
        String log = Files.readString(dir.resolve("log.txt"), StandardCharsets.UTF_8);
        assertEquals(1, process.exitValue(), log);
        assertTrue(log.contains("mixtune env: --allow-download: DJL could not download libtorch 2.7.1 cu128 into "
                + dir.resolve("cache").resolve("pytorch") + ": Failed to save pytorch index file (IOException: Offline "
                + "mode is enabled.)"), log);
    }
}
