package io.mixtune.trainer.device;

import ai.djl.engine.Engine;
import ai.djl.engine.EngineException;
import ai.djl.util.Utils;
import java.io.IOException;
import java.net.URL;
import java.util.Arrays;
import java.util.Collections;
import java.util.Enumeration;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Lets DJL download a CUDA libtorch once, only when the user allows network with --allow-download or
 * MIXTUNE_ALLOW_DOWNLOAD=1 (bin/mixtune runs Java with ai.djl.offline=true otherwise). DJL downloads only when no
 * native libtorch jar is on the class path (its Platform.detectPlatform reads native/lib/pytorch.properties through
 * the thread's context class loader), so the engine is loaded here, once, with that resource hidden, with network
 * allowed and PYTORCH_FLAVOR cu128 unless set: the flavor whose JNI the pytorch-jni jar carries. A later run finds the
 * download in DJL's cache without network; PYTORCH_LIBRARY_PATH always wins over both.
 */
public final class TorchSetup {
    private TorchSetup() {}

    /** MIXTUNE_ALLOW_DOWNLOAD is 1 or true. */
    public static boolean downloadAllowedByEnvironment() {
        String value = System.getenv("MIXTUNE_ALLOW_DOWNLOAD");
        return value != null && (value.equals("1") || value.equalsIgnoreCase("true"));
    }

    /**
     * Before anything touches DJL's engine: a libtorch named by PYTORCH_LIBRARY_PATH gets the PYTORCH_VERSION and
     * PYTORCH_FLAVOR its folder tells ({@link TorchSource#identify}) where they are not set (DJL would take the jar's
     * 2.7.1 and guess the flavor from a libcudart it looks for through JNA, which misses a pip torch's, and so pick the
     * CPU JNI); without one, loads the engine the download way when allowed.
     */
    public static TorchSource apply(boolean allowDownload) {
        TorchSource source = TorchSource.configured(TorchSetup::envOrProperty, allowDownload);
        if (source.kind() == TorchSource.Kind.LIBRARY_PATH) {
            TorchSource.identify(source.libraryDir()).ifPresent(identity -> {
                setIfUnset("PYTORCH_VERSION", identity.version());
                setIfUnset("PYTORCH_FLAVOR", identity.flavor());
            });
            return TorchSource.configured(TorchSetup::envOrProperty, allowDownload);
        }
        if (source.kind() != TorchSource.Kind.DOWNLOAD) {
            return source;
        }
        System.setProperty("ai.djl.offline", "false");
        if (envOrProperty("PYTORCH_FLAVOR") == null) {
            System.setProperty("PYTORCH_FLAVOR", source.flavor());
        }
        Thread thread = Thread.currentThread();
        ClassLoader original = thread.getContextClassLoader();
        thread.setContextClassLoader(new WithoutBundledLibtorch(original == null
                ? TorchSetup.class.getClassLoader() : original));
        try {
            Engine.getEngine("PyTorch");
        } catch (RuntimeException e) {
            throw new IllegalStateException("--allow-download: DJL could not download libtorch " + source.version() + " "
                    + envOrProperty("PYTORCH_FLAVOR") + " into " + Utils.getEngineCacheDir("pytorch") + ": "
                    + causes(e) + ". Without network, give an existing libtorch with PYTORCH_LIBRARY_PATH (mixtune env "
                    + "lists the steps)", e);
        } finally {
            thread.setContextClassLoader(original);
        }
        return source;
    }

    private static String causes(Throwable e) {
        StringBuilder text = new StringBuilder(String.valueOf(e.getMessage()));
        for (Throwable cause = e.getCause(); cause != null; cause = cause.getCause()) {
            text.append(" (").append(cause.getClass().getSimpleName()).append(": ").append(cause.getMessage())
                    .append(')');
        }
        return text.toString();
    }

    /** The dynamic loader's "cannot open shared object file" for a library libtorch needs, and the library. */
    private static final Pattern MISSING_LIBRARY = Pattern.compile("(lib[\\w.+-]+\\.so[\\d.]*): cannot open shared "
            + "object file");

    /**
     * What stopped DJL from loading libtorch, in one line a user can act on ("not loaded: " where from, the loader's
     * message and, for the usual causes, what to do); null when {@code e} is not such a failure. A failure to load is
     * an EngineException thrown from DJL's engine provider (PtEngine wraps whatever the loading threw); libtorch's own
     * errors at run time are EngineExceptions too, but thrown after the engine is up.
     */
    public static String loadFailure(Throwable e) {
        if (!(e instanceof EngineException) || Arrays.stream(e.getStackTrace()).noneMatch(frame -> frame.getClassName()
                .equals("ai.djl.pytorch.engine.PtEngineProvider"))) {
            return null;
        }
        Throwable cause = e;
        while (cause.getCause() != null) {
            cause = cause.getCause();
        }
        String message = cause.getMessage() == null ? cause.getClass().getSimpleName() : cause.getMessage();
        // The JVM repeats the file's path before the loader's message ("/a/libx.so: /a/libx.so: file too short").
        message = message.replaceFirst("^(\\S+): \\1: ", "$1: ").replaceFirst("\\.$", "");
        TorchSource source = TorchSource.configured(TorchSetup::envOrProperty, false);
        String where = source.kind() == TorchSource.Kind.LIBRARY_PATH
                ? source.libraryDir() + " (PYTORCH_LIBRARY_PATH, PYTORCH_VERSION=" + envOrProperty("PYTORCH_VERSION")
                        + ", PYTORCH_FLAVOR=" + envOrProperty("PYTORCH_FLAVOR") + ")"
                : "the bundled CPU libtorch, extracted into " + Utils.getEngineCacheDir("pytorch");
        return "not loaded: " + where + ": " + message + hint(message, source);
    }

    private static String hint(String message, TorchSource source) {
        String instead = source.kind() == TorchSource.Kind.LIBRARY_PATH
                ? "; unset PYTORCH_LIBRARY_PATH for the bundled CPU libtorch (mixtune env lists the GPU set-up steps)"
                : "; remove that folder for DJL to extract it again";
        Matcher missing = MISSING_LIBRARY.matcher(message);
        boolean libraryMissing = missing.find();
        if (libraryMissing && missing.group(1).startsWith("libcuda.so")) {
            return ": libcuda.so.1 comes with the NVIDIA driver, which this machine lacks (a CUDA libtorch loads only "
                    + "where nvidia-smi works)" + instead;
        }
        if (libraryMissing) {
            return ": " + missing.group(1) + " is needed by this libtorch and not found (pip installs CUDA's libraries "
                    + "as the nvidia-* packages beside torch, which pip install --no-deps leaves out; or name their "
                    + "folder in LD_LIBRARY_PATH)" + instead;
        }
        if (source.kind() == TorchSource.Kind.LIBRARY_PATH && (message.contains("Offline mode is enabled")
                || message.contains("Resource not found in classpath: jnilib/"))) {
            // DJL looked for a JNI for this version and flavor in the folder, its cache and the pytorch-jni jar, then
            // went to download one
            String version = envOrProperty("PYTORCH_VERSION");
            String flavor = envOrProperty("PYTORCH_FLAVOR");
            return ": DJL has no JNI for libtorch " + version + " " + flavor + " (the pytorch-jni jar carries "
                    + TorchSource.VERSION + "'s, cpu and " + TorchSource.CUDA_FLAVOR + "; one built by "
                    + "bench/gpu/build-jni.sh for this torch is looked for as " + source.libraryDir()
                    + "/0.35.1-libdjl_torch.so and as " + TorchSource.engineCacheDir(TorchSetup::envOrProperty)
                    + "/" + version + "-" + flavor + "-linux-x86_64/0.35.1-libdjl_torch.so)" + instead;
        }
        if (message.contains("undefined symbol")) {
            return ": the libraries do not fit together, one built for another version (DJL 0.35.1's JNI is built for "
                    + TorchSource.VERSION + "; bench/gpu/build-jni.sh builds one for the torch at hand)" + instead;
        }
        if (message.contains("file too short") || message.contains("invalid ELF header")
                || message.contains("wrong ELF class")) {
            return ": not a shared library for Linux x86-64" + instead;
        }
        return instead;
    }

    private static void setIfUnset(String name, String value) {
        if (envOrProperty(name) == null || envOrProperty(name).isBlank()) {
            System.setProperty(name, value);
        }
    }

    /** DJL's lookup order: the environment variable, then the system property. */
    public static String envOrProperty(String name) {
        String value = System.getenv(name);
        return value != null ? value : System.getProperty(name);
    }

    /** The application class loader without pytorch-native-cpu's platform file. */
    private static final class WithoutBundledLibtorch extends ClassLoader {
        private static final String PLATFORM_FILE = "native/lib/pytorch.properties";

        WithoutBundledLibtorch(ClassLoader parent) {
            super(parent);
        }

        @Override
        public Enumeration<URL> getResources(String name) throws IOException {
            return PLATFORM_FILE.equals(name) ? Collections.emptyEnumeration() : super.getResources(name);
        }

        @Override
        public URL getResource(String name) {
            return PLATFORM_FILE.equals(name) ? null : super.getResource(name);
        }
    }
}
