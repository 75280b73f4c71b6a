package io.mixtune.trainer.device;

import ai.djl.engine.Engine;
import ai.djl.util.Utils;
import java.io.IOException;
import java.net.URL;
import java.util.Collections;
import java.util.Enumeration;

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

    /** Before anything touches DJL's engine: loads it the download way when allowed and no library path is given. */
    public static TorchSource apply(boolean allowDownload) {
        TorchSource source = TorchSource.configured(TorchSetup::envOrProperty, allowDownload);
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
