package io.mixtune.trainer.cli;

import ai.djl.engine.Engine;
import ai.djl.engine.StandardCapabilities;
import ai.djl.pytorch.jni.LibUtils;
import io.mixtune.trainer.device.ComputeDevice;
import io.mixtune.trainer.device.GpuSetup;
import io.mixtune.trainer.device.TorchSetup;
import io.mixtune.trainer.device.TorchSource;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * `mixtune env`: what this install computes with: Java, DJL, the libtorch loaded (version, flavor, folder), the
 * devices, the compute types a recipe gets on them and, without a usable GPU, the steps that give one.
 */
final class EnvCommand implements Command {

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
        String nvidiaSmi = nvidiaSmi("--query-gpu=" + GPU_QUERY, "--format=csv,noheader,nounits");
        if (gpu) {
            List<String> gpus = nvidiaSmi == null || nvidiaSmi.isBlank()
                    ? List.of("gpu(0): libtorch's CUDA sees it; no name or memory without nvidia-smi")
                    : gpuLines(nvidiaSmi);
            gpus.forEach(gpuLine -> out.printf(Locale.ROOT, "%-10s %s%n", "", gpuLine));
        } else {
            long listed = nvidiaSmi == null ? 0 : nvidiaSmi.lines().filter(l -> !l.isBlank()).count();
            out.printf(Locale.ROOT, "%-10s no usable GPU: %s%s%n", "", ComputeDevice.whyNoGpu(), listed > 0
                    ? "; nvidia-smi lists " + listed + " GPU(s)" : "");
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
        Matcher m = TorchSource.CACHE_FOLDER.matcher(Path.of(libtorchDir).getFileName().toString());
        if (m.matches()) {
            return m.group(2);
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

    /** What nvidia-smi tells of each GPU; it needs no CUDA runtime in this process (see ComputeDevice.gpuUsable). */
    private static final String GPU_QUERY = "index,name,memory.total,memory.free,compute_cap,driver_version";

    /**
     * One line per GPU from nvidia-smi's answer to {@link #GPU_QUERY} in CSV without header or units (memory in MiB);
     * a row it cannot read is shown as it is.
     */
    static List<String> gpuLines(String csv) {
        List<String> lines = new ArrayList<>();
        for (String row : csv.strip().split("\\R")) {
            String[] field = row.strip().split("\\s*,\\s*");
            try {
                if (field.length != 6) {
                    throw new NumberFormatException();
                }
                lines.add(String.format(Locale.ROOT, "gpu(%d): %s, %.1f GiB total, %.1f GiB free, compute capability "
                        + "%s, driver %s", Integer.parseInt(field[0]), field[1], Double.parseDouble(field[2]) / 1024,
                        Double.parseDouble(field[3]) / 1024, field[4], field[5]));
            } catch (NumberFormatException e) {
                lines.add("nvidia-smi: " + row.strip());
            }
        }
        return lines;
    }

    /** nvidia-smi's output for these arguments, or null when it is missing or fails. */
    private static String nvidiaSmi(String... arguments) {
        List<String> command = new ArrayList<>(List.of("nvidia-smi"));
        command.addAll(List.of(arguments));
        try {
            Process process = new ProcessBuilder(command).redirectErrorStream(true).start();
            String output = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            return process.waitFor(10, TimeUnit.SECONDS) && process.exitValue() == 0 ? output : null;
        } catch (IOException e) {
            return null;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return null;
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
