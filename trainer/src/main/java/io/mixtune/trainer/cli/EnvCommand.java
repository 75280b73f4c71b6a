package io.mixtune.trainer.cli;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.engine.StandardCapabilities;
import ai.djl.pytorch.jni.LibUtils;
import ai.djl.util.cuda.CudaUtils;
import io.mixtune.trainer.device.ComputeDevice;
import io.mixtune.trainer.device.GpuSetup;
import io.mixtune.trainer.device.TorchSetup;
import io.mixtune.trainer.device.TorchSource;
import java.io.IOException;
import java.io.PrintStream;
import java.lang.management.MemoryUsage;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * `mixtune env`: what this install computes with: Java, DJL, the libtorch loaded (version, flavor, folder), the
 * devices, the compute types a recipe gets on them and, without a usable GPU, the steps that give one.
 */
final class EnvCommand implements Command {
    /** DJL's cache folders are named VERSION[-BUILD]-FLAVOR-CLASSIFIER, e.g. 2.7.1-20250812-cpu-linux-x86_64. */
    private static final Pattern CACHE_FOLDER = Pattern.compile("\\d+\\.\\d+\\.\\d+(?:-\\d+)?-(cpu|cu\\d+)"
            + "(?:-precxx11)?-[a-z]+-[a-z0-9_]+");

    @Override
    public String name() {
        return "env";
    }

    @Override
    public String summary() {
        return "Java, DJL, the libtorch in use and where from, the GPUs, the compute types; how to set up a GPU";
    }

    @Override
    public String usage() {
        return "[--allow-download]";
    }

    @Override
    public Options options() {
        return new Options();
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
        TorchSource configured = TorchSource.configured(TorchSetup::envOrProperty, false);
        out.printf(Locale.ROOT, "%-10s %s (%s), %s%n", "java", System.getProperty("java.version"),
                System.getProperty("java.vendor"), System.getProperty("java.home"));
        Engine engine;
        try {
            engine = Engine.getInstance();
        } catch (RuntimeException e) {
            String notLoaded = TorchSetup.loadFailure(e);
            if (notLoaded == null) {
                throw e;
            }
            // What is known without libtorch, so that env still shows what to fix.
            out.printf(Locale.ROOT, "%-10s %s, engine PyTorch%n", "djl", Engine.getDjlVersion());
            out.printf(Locale.ROOT, "%-10s %s%n", "libtorch", notLoaded);
            printWarningsAndNetwork(out);
            out.printf(Locale.ROOT, "%-10s cpu: %d cores, %s%n", "devices", Runtime.getRuntime().availableProcessors(),
                    memoryLine());
            printGpuSteps(out);
            return Mixtune.USAGE;
        }
        out.printf(Locale.ROOT, "%-10s %s, engine %s%n", "djl", Engine.getDjlVersion(), engine.getEngineName());
        String libtorchDir = LibUtils.getLibtorchPath();
        out.printf(Locale.ROOT, "%-10s %s, flavor %s, loaded from %s (%s)%n", "libtorch", LibUtils.getVersion(),
                flavor(libtorchDir), libtorchDir, source(configured, libtorchDir));
        Path builtJni = TorchSource.builtJni(TorchSetup::envOrProperty);
        if (builtJni != null) {
            out.printf(Locale.ROOT, "%-10s %s (not the pytorch-jni jar's, which is built for libtorch %s)%n", "jni",
                    builtJni, TorchSource.VERSION);
        }
        printWarningsAndNetwork(out);
        out.printf(Locale.ROOT, "%-10s cpu: %d cores, %s%n", "devices", Runtime.getRuntime().availableProcessors(),
                memoryLine());
        boolean gpu = ComputeDevice.gpuUsable();
        if (gpu) {
            for (int id = 0; id < engine.getGpuCount(); id++) {
                out.printf(Locale.ROOT, "%-10s %s%n", "", gpuLine(id));
            }
        } else {
            int driverGpus = CudaUtils.getGpuCount();
            out.printf(Locale.ROOT, "%-10s no usable GPU: %s%s%n", "", ComputeDevice.whyNoGpu(), driverGpus > 0
                    ? "; the NVIDIA driver reports " + driverGpus + " GPU(s), CUDA " + CudaUtils.getCudaVersionString()
                    : "");
        }
        out.printf(Locale.ROOT, "%-10s %s%n", "compute", gpu
                ? "device auto -> gpu(0): compute_dtype auto = fp16 with dynamic loss scaling (DJL's PyTorch JNI has "
                        + "no bfloat16); NF4 codes held and dequantized on the GPU; fp32 on request"
                : "device auto -> cpu: compute_dtype auto = fp32 (fp16 with dynamic loss scaling is for a GPU: "
                        + "DJL's PyTorch JNI has no bfloat16)");
        out.printf(Locale.ROOT, "%-10s %s%n", "features", engine.hasCapability(StandardCapabilities.CUDA)
                ? "CUDA" + (engine.hasCapability(StandardCapabilities.CUDNN) ? ", cuDNN" : "") : "CPU only");
        if (!gpu) {
            printGpuSteps(out);
        }
        return Mixtune.OK;
    }

    private static void printWarningsAndNetwork(PrintStream out) {
        for (String problem : TorchSource.problems(TorchSetup::envOrProperty)) {
            out.printf(Locale.ROOT, "%-10s %s%n", "warning", problem);
        }
        out.printf(Locale.ROOT, "%-10s %s%n", "network", "true".equals(System.getProperty("ai.djl.offline"))
                ? "offline (ai.djl.offline=true): DJL downloads nothing; --allow-download or MIXTUNE_ALLOW_DOWNLOAD=1 "
                        + "lets it fetch a CUDA libtorch once"
                : "allowed for DJL (ai.djl.offline is not true)");
    }

    private static void printGpuSteps(PrintStream out) {
        out.println();
        out.println("To train on an NVIDIA GPU, give DJL a CUDA libtorch " + TorchSource.VERSION
                + " (the pytorch-jni jar carries its " + TorchSource.CUDA_FLAVOR + " JNI), either way:");
        GpuSetup.STEPS.forEach(step -> out.println("  " + step));
    }

    /** The flavor from DJL's cache folder name, else PYTORCH_FLAVOR (a folder given by PYTORCH_LIBRARY_PATH). */
    static String flavor(String libtorchDir) {
        Matcher m = CACHE_FOLDER.matcher(Path.of(libtorchDir).getFileName().toString());
        if (m.matches()) {
            return m.group(1);
        }
        String flavor = TorchSetup.envOrProperty("PYTORCH_FLAVOR");
        return flavor == null ? "unknown (PYTORCH_FLAVOR not set)" : flavor;
    }

    private static String source(TorchSource configured, String libtorchDir) {
        return switch (configured.kind()) {
            case LIBRARY_PATH -> "PYTORCH_LIBRARY_PATH";
            case DOWNLOAD -> "downloaded by DJL";
            case BUNDLED_CPU -> libtorchDir.contains("-cpu-") ? "the bundled pytorch-native-cpu, extracted by DJL"
                    : "DJL's cache";
        };
    }

    private static String gpuLine(int id) {
        Device device = Device.gpu(id);
        MemoryUsage memory = CudaUtils.getGpuMemory(device);
        return String.format(Locale.ROOT, "%s: %s, %.1f GiB total, %.1f GiB free, compute capability %s, CUDA %s",
                device, gpuName(id), memory.getMax() / Math.pow(1024, 3),
                (memory.getMax() - memory.getUsed()) / Math.pow(1024, 3), CudaUtils.getComputeCapability(id),
                CudaUtils.getCudaVersionString());
    }

    /** nvidia-smi's name for the GPU; CUDA's runtime API that DJL binds has no name query. */
    private static String gpuName(int id) {
        try {
            Process process = new ProcessBuilder("nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i",
                    String.valueOf(id)).redirectErrorStream(true).start();
            String name = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8).strip();
            return process.waitFor(10, TimeUnit.SECONDS) && process.exitValue() == 0 ? name : "unknown name";
        } catch (IOException e) {
            return "unknown name (no nvidia-smi)";
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return "unknown name";
        }
    }

    private static String memoryLine() {
        try (Stream<String> lines = Files.lines(Path.of("/proc/meminfo"))) {
            List<String> fields = lines.filter(l -> l.startsWith("MemTotal:") || l.startsWith("MemAvailable:"))
                    .collect(Collectors.toList());
            if (fields.size() == 2) {
                return String.format(Locale.ROOT, "%.1f GiB memory, %.1f GiB available", kib(fields.get(0)),
                        kib(fields.get(1)));
            }
        } catch (IOException e) {
            // not Linux: say nothing of memory
        }
        return "memory unknown";
    }

    private static double kib(String meminfoLine) {
        return Long.parseLong(meminfoLine.replaceAll("[^0-9]", "")) / Math.pow(1024, 2);
    }
}
