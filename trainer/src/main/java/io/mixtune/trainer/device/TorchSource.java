package io.mixtune.trainer.device;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.function.UnaryOperator;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Where DJL 0.35.1 will take libtorch from, as its {@code ai.djl.pytorch.jni.LibUtils} decides, read from the same
 * environment variables and system properties (each looked up as an environment variable first, then as a system
 * property, DJL's {@code Utils.getEnvOrSystemProperty}) before the engine loads:
 *
 * <ol>
 *   <li>{@code PYTORCH_LIBRARY_PATH}: the first folder in it holding {@code libtorch.so}. DJL then takes the version
 *       from {@code PYTORCH_VERSION} and the flavor from {@code PYTORCH_FLAVOR} (unset: "cu" + the driver's CUDA
 *       version when a GPU is present, else cpu-precxx11), and the JNI from that folder, from its cache
 *       ({@code ~/.djl.ai/pytorch/VERSION-FLAVOR-linux-x86_64/0.35.1-libdjl_torch.so}) or, when the pytorch-jni jar's
 *       {@code jni_version} starts with VERSION-0.35.1, from the jar's {@code jnilib/linux-x86_64/FLAVOR/}: that jar
 *       carries {@code cpu} and {@code cu128}, so 2.7.1 with cu128 needs no network.</li>
 *   <li>Otherwise the bundled CPU libtorch (the pytorch-native-cpu jar, extracted once into the cache).</li>
 *   <li>DJL downloads libtorch (publish.djl.ai) only when no native jar is on the class path and network is allowed;
 *       mixtune hides the bundled jar and allows it only with {@code --allow-download} or
 *       {@code MIXTUNE_ALLOW_DOWNLOAD=1} ({@link TorchSetup}).</li>
 * </ol>
 */
public record TorchSource(Kind kind, Path libraryDir, String version, String flavor) {
    /** The libtorch version DJL 0.35.1's JNI is built for. */
    public static final String VERSION = "2.7.1";
    /** The CUDA flavor whose JNI the pytorch-jni jar carries for linux-x86_64. */
    public static final String CUDA_FLAVOR = "cu128";
    private static final String DJL_VERSION = "0.35.1";
    private static final String JNI_FILE = "libdjl_torch.so";

    public enum Kind {
        /** pytorch-native-cpu from the class path, the default. */
        BUNDLED_CPU,
        /** an existing libtorch named by PYTORCH_LIBRARY_PATH. */
        LIBRARY_PATH,
        /** DJL's one-time download into its cache, allowed by --allow-download. */
        DOWNLOAD
    }

    /** What DJL will do given these settings; {@code lookup} answers environment variables and system properties. */
    public static TorchSource configured(UnaryOperator<String> lookup, boolean allowDownload) {
        String path = blankToNull(lookup.apply("PYTORCH_LIBRARY_PATH"));
        String version = blankToNull(lookup.apply("PYTORCH_VERSION"));
        String flavor = blankToNull(lookup.apply("PYTORCH_FLAVOR"));
        if (path != null) {
            Path dir = libtorchDir(path);
            if (dir != null) {
                return new TorchSource(Kind.LIBRARY_PATH, dir, version == null ? VERSION : version, flavor);
            }
        }
        if (allowDownload) {
            return new TorchSource(Kind.DOWNLOAD, null, VERSION, flavor == null ? CUDA_FLAVOR : flavor);
        }
        return new TorchSource(Kind.BUNDLED_CPU, null, VERSION, "cpu");
    }

    /**
     * What stops this configuration from loading a CUDA libtorch DJL 0.35.1 can drive, one sentence each; empty when
     * nothing is known to be wrong ({@code lookup} as for {@link #configured}).
     */
    public static List<String> problems(UnaryOperator<String> lookup) {
        List<String> problems = new ArrayList<>();
        String path = blankToNull(lookup.apply("PYTORCH_LIBRARY_PATH"));
        if (path == null) {
            return problems;
        }
        if (libtorchDir(path) == null) {
            problems.add("PYTORCH_LIBRARY_PATH=" + path + " holds no libtorch.so: DJL ignores it and loads the bundled "
                    + "CPU libtorch");
            return problems;
        }
        String pipVersion = pipTorchVersion(libtorchDir(path));
        String version = blankToNull(lookup.apply("PYTORCH_VERSION"));
        Path builtJni = builtJni(lookup);
        if (builtJni != null) {
            if (pipVersion != null && !pipVersion.startsWith(version)) {
                problems.add(libtorchDir(path) + " is pip torch " + pipVersion + " but PYTORCH_VERSION=" + version
                        + " selects the JNI " + builtJni + ": a JNI works only with the libtorch it was built "
                        + "against (bench/gpu/build-jni.sh builds one for the torch at hand)");
            }
            return problems;
        }
        if (pipVersion != null && !pipVersion.startsWith(VERSION)) {
            problems.add(libtorchDir(path) + " is pip torch " + pipVersion + ", not " + VERSION + ": DJL 0.35.1's JNI "
                    + "may load against it, but measured with pip torch 2.13.0+cpu it fails to create any tensor "
                    + "(torchFromBlob: \"set_stride is not allowed on a Tensor created from .data or .detach()\"); "
                    + "bench/gpu/build-jni.sh builds DJL's JNI against it");
        }
        if (version == null) {
            problems.add("PYTORCH_VERSION is not set: set it to " + VERSION + " (the version DJL 0.35.1's JNI is built "
                    + "for)");
        } else if (!version.startsWith(VERSION)) {
            problems.add("PYTORCH_VERSION=" + version + ": DJL 0.35.1's JNI is built for libtorch " + VERSION + "; with "
                    + "another version DJL looks for a JNI in the folder, its cache or publish.djl.ai");
        }
        String flavor = blankToNull(lookup.apply("PYTORCH_FLAVOR"));
        if (flavor == null) {
            problems.add("PYTORCH_FLAVOR is not set: set it to " + CUDA_FLAVOR + " for a CUDA libtorch (cpu for a CPU "
                    + "one), the JNI flavors the pytorch-jni jar carries");
        } else if (!flavor.equals(CUDA_FLAVOR) && !flavor.equals("cpu")) {
            problems.add("PYTORCH_FLAVOR=" + flavor + ": the pytorch-jni jar carries JNIs for cpu and " + CUDA_FLAVOR
                    + " only");
        }
        return problems;
    }

    /**
     * The JNI DJL 0.35.1 loads instead of the jar's when PYTORCH_LIBRARY_PATH names a libtorch and PYTORCH_VERSION is
     * not the jar's {@value #VERSION} (one built from DJL's source, e.g. by bench/gpu/build-jni.sh), or null: as DJL's
     * {@code LibUtils.findJniLibrary}, {@code [0.35.1-]libdjl_torch.so} in the libtorch folder, else
     * {@code VERSION-FLAVOR-linux-x86_64/0.35.1-libdjl_torch.so} in its engine cache (ENGINE_CACHE_DIR/pytorch, else
     * DJL_CACHE_DIR/pytorch, else ~/.djl.ai/pytorch). With the jar's version DJL takes the jar's JNI from there too
     * (its own copy), so that is not reported.
     */
    public static Path builtJni(UnaryOperator<String> lookup) {
        String path = blankToNull(lookup.apply("PYTORCH_LIBRARY_PATH"));
        String version = blankToNull(lookup.apply("PYTORCH_VERSION"));
        String flavor = blankToNull(lookup.apply("PYTORCH_FLAVOR"));
        Path dir = path == null ? null : libtorchDir(path);
        if (dir == null || version == null || version.startsWith(VERSION)) {
            return null;
        }
        for (String name : List.of(DJL_VERSION + "-" + JNI_FILE, JNI_FILE)) {
            if (Files.isRegularFile(dir.resolve(name))) {
                return dir.resolve(name);
            }
        }
        Path cache = engineCacheDir(lookup);
        if (cache == null || flavor == null) {
            return null;
        }
        Path cached = cache.resolve(version + "-" + flavor + "-linux-x86_64").resolve(DJL_VERSION + "-" + JNI_FILE);
        return Files.isRegularFile(cached) ? cached : null;
    }

    /** DJL's {@code Utils.getEngineCacheDir("pytorch")}, or null when no home folder is known. */
    static Path engineCacheDir(UnaryOperator<String> lookup) {
        String engineCache = blankToNull(lookup.apply("ENGINE_CACHE_DIR"));
        if (engineCache != null) {
            return Path.of(engineCache, "pytorch");
        }
        String djlCache = blankToNull(lookup.apply("DJL_CACHE_DIR"));
        if (djlCache != null) {
            return Path.of(djlCache, "pytorch");
        }
        String home = blankToNull(lookup.apply("user.home"));
        return home == null ? null : Path.of(home, ".djl.ai", "pytorch");
    }

    /** The version a pip install of torch records beside its lib folder (torch/version.py), or null. */
    static String pipTorchVersion(Path libDir) {
        return versionPyValue(libDir, "__version__");
    }

    /** What DJL is to be told of a libtorch: its version (without a local label) and JNI flavor (cpu, cu128, ...). */
    public record Identity(String version, String flavor) {}

    /** DJL's cache folders are named VERSION[-BUILD]-FLAVOR-CLASSIFIER, e.g. 2.7.1-20250812-cpu-linux-x86_64. */
    public static final Pattern CACHE_FOLDER = Pattern.compile("(\\d+\\.\\d+\\.\\d+)(?:-\\d+)?-(cpu|cu\\d+)"
            + "(?:-precxx11)?-[a-z]+-[a-z0-9_]+");

    /**
     * The libtorch in {@code libDir} as its folder tells: a pip torch's version.py (__version__ '2.7.1+cu128' and
     * cuda '12.8', or None for a CPU build: cu128, cpu), else the name of a DJL cache folder (2.7.1-cu128-linux-x86_64);
     * empty when neither is there.
     */
    public static Optional<Identity> identify(Path libDir) {
        String pipVersion = pipTorchVersion(libDir);
        if (pipVersion != null) {
            String cuda = versionPyValue(libDir, "cuda");
            return Optional.of(new Identity(pipVersion.replaceFirst("\\+.*", ""),
                    cuda == null ? "cpu" : "cu" + cuda.replaceAll("[^0-9]", "")));
        }
        Matcher folder = CACHE_FOLDER.matcher(libDir.getFileName() == null ? "" : libDir.getFileName().toString());
        return folder.matches() ? Optional.of(new Identity(folder.group(1), folder.group(2))) : Optional.empty();
    }

    /** A quoted string assigned to {@code name} in torch/version.py beside {@code libDir} (null when None or absent). */
    private static String versionPyValue(Path libDir, String name) {
        Path versionFile = libDir.getParent() == null ? null : libDir.getParent().resolve("version.py");
        if (versionFile == null || !Files.isRegularFile(versionFile)) {
            return null;
        }
        Pattern assignment = Pattern.compile("^" + Pattern.quote(name) + "\\s*(?::[^=]*)?=\\s*['\"]([^'\"]+)['\"]");
        try {
            for (String line : Files.readAllLines(versionFile)) {
                Matcher m = assignment.matcher(line);
                if (m.find()) {
                    return m.group(1);
                }
            }
        } catch (IOException e) {
            return null;
        }
        return null;
    }

    /** The folder of the first entry of a PYTORCH_LIBRARY_PATH that holds libtorch.so (or is it), as DJL picks it. */
    static Path libtorchDir(String libraryPath) {
        for (String entry : libraryPath.split(java.io.File.pathSeparator)) {
            if (entry.isEmpty()) {
                continue;
            }
            Path path = Path.of(entry);
            if (Files.isRegularFile(path) && path.getFileName().toString().equals("libtorch.so")) {
                return path.toAbsolutePath().getParent();
            }
            if (Files.isRegularFile(path.resolve("libtorch.so"))) {
                return path.toAbsolutePath();
            }
        }
        return null;
    }

    private static String blankToNull(String value) {
        return value == null || value.isBlank() ? null : value.trim();
    }
}
