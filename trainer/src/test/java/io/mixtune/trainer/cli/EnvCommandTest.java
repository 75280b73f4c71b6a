package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
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
        Map<String, String> environment = new HashMap<>();
        environment.put("DJL_OFFLINE", "true"); // never a real download from a test
        environment.put("ENGINE_CACHE_DIR", dir.resolve("cache").toString());
        Run env = runInOwnJvm(dir, environment, "env", "--allow-download");
        assertEquals(1, env.code(), env.out());
        assertTrue(env.out().contains("mixtune env: --allow-download: DJL could not download libtorch 2.7.1 cu128 into "
                + dir.resolve("cache").resolve("pytorch") + ": Failed to save pytorch index file (IOException: Offline "
                + "mode is enabled.)"), env.out());
    }

    /**
     * A libtorch that cannot load: here a libtorch.so that is no shared library; on a machine without the NVIDIA
     * driver a CUDA libtorch fails the same way, on libcuda.so.1 (seen with pip torch 2.14.1+cu130). Before, env
     * printed only "Failed to load PyTorch native library" (exit 1), and so did train. Now env prints what it knows,
     * the cause and the steps, and train stops in one line naming the folder, both exit 2, nothing written.
     */
    @Test
    void aLibtorchThatCannotLoadIsNamedWithItsCause(@TempDir Path dir) throws IOException, InterruptedException {
        Path lib = Files.createDirectories(dir.resolve("torch/lib"));
        Files.writeString(lib.resolve("libtorch.so"), "not a library");
        Map<String, String> environment = Map.of("PYTORCH_LIBRARY_PATH", lib.toString(), "PYTORCH_VERSION", "2.7.1",
                "PYTORCH_FLAVOR", "cu128");
        Run env = runInOwnJvm(dir, environment, "env");
        assertEquals(2, env.code(), env.out());
        assertTrue(env.out().contains("java       " + System.getProperty("java.version")), env.out());
        assertTrue(env.out().contains("libtorch   not loaded: " + lib.toAbsolutePath() + " (PYTORCH_LIBRARY_PATH, "
                + "PYTORCH_VERSION=2.7.1, PYTORCH_FLAVOR=cu128): " + lib.toAbsolutePath().resolve("libtorch.so")
                + ": file too short: not a shared library for Linux x86-64"), env.out());
        assertTrue(env.out().contains("export PYTORCH_VERSION=2.7.1 PYTORCH_FLAVOR=cu128"), env.out());

        Path output = dir.resolve("out");
        Run train = runInOwnJvm(dir, environment, "train", "--recipe", "../recipes/quickstart.yaml", "--set",
                "output_dir=" + output);
        assertEquals(2, train.code(), train.out());
        List<String> lines = train.out().strip().lines().filter(l -> l.startsWith("mixtune")).toList();
        assertEquals(1, lines.size(), train.out());
        assertTrue(lines.get(0).startsWith("mixtune train: libtorch not loaded: " + lib.toAbsolutePath()
                + " (PYTORCH_LIBRARY_PATH"), lines.get(0));
        assertTrue(lines.get(0).contains("unset PYTORCH_LIBRARY_PATH for the bundled CPU libtorch"), lines.get(0));
        assertFalse(Files.exists(output), "nothing written");
    }

    /**
     * The GPU lines come from nvidia-smi, not from DJL's CudaUtils, which finds libcudart through JNA in the linker's
     * folders only and so misses a pip torch's (site-packages/nvidia/.../lib). The row is nvidia-smi's format for
     * --query-gpu=index,name,memory.total,memory.free,compute_cap,driver_version --format=csv,noheader,nounits.
     */
    @Test
    void gpuLinesReadNvidiaSmi() {
        assertEquals(List.of("gpu(0): NVIDIA H100 80GB HBM3, 79.6 GiB total, 79.1 GiB free, compute capability 9.0, "
                + "driver 580.82.07", "gpu(1): NVIDIA L4, 22.5 GiB total, 22.0 GiB free, compute capability 8.9, driver "
                + "580.82.07", "nvidia-smi: 2, NVIDIA A100, [N/A], [N/A], 8.0, 580.82.07"),
                EnvCommand.gpuLines("0, NVIDIA H100 80GB HBM3, 81559, 81003, 9.0, 580.82.07\n"
                        + "1, NVIDIA L4, 23034, 22517, 8.9, 580.82.07\n2, NVIDIA A100, [N/A], [N/A], 8.0, 580.82.07\n"));
    }

    private record Run(int code, String out) {}

    /** mixtune in a JVM of its own (the test JVM's libtorch is loaded already), stdout and stderr together. */
    private static Run runInOwnJvm(Path dir, Map<String, String> environment, String... args)
            throws IOException, InterruptedException {
        List<String> command = new ArrayList<>(List.of(ProcessHandle.current().info().command().orElse("java"),
                "-Dai.djl.offline=true", "-cp", System.getProperty("java.class.path"), Mixtune.class.getName()));
        command.addAll(List.of(args));
        Path log = Files.createTempFile(dir, "mixtune", ".log");
        ProcessBuilder builder = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile());
        builder.environment().keySet().removeIf(name -> name.startsWith("PYTORCH_") || name.equals(
                "MIXTUNE_ALLOW_DOWNLOAD"));
        builder.environment().putAll(environment);
        Process process = builder.start();
        assertTrue(process.waitFor(120, TimeUnit.SECONDS));
        return new Run(process.exitValue(), Files.readString(log, StandardCharsets.UTF_8));
    }
}
