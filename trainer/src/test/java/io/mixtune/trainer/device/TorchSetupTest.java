package io.mixtune.trainer.device;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.EngineException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What a failed libtorch load says. The loader messages are the ones seen here with pip torch 2.14.1+cu130 on this
 * machine without an NVIDIA driver (libcuda.so.1), the dynamic loader's wording for a missing library, and a stand-in
 * driver lacking a function; EnvCommandTest loads a broken libtorch for real.
 */
class TorchSetupTest {

    /** An EngineException as DJL's engine provider throws it when loading fails: PtEngine wraps the loader's error. */
    private static EngineException failedLoad(String loaderMessage) {
        EngineException e = new EngineException("Failed to load PyTorch native library",
                new UnsatisfiedLinkError(loaderMessage));
        e.setStackTrace(new StackTraceElement[] {
            new StackTraceElement("ai.djl.pytorch.engine.PtEngine", "newInstance", "PtEngine.java", 90),
            new StackTraceElement("ai.djl.pytorch.engine.PtEngineProvider", "getEngine", "PtEngineProvider.java", 41)});
        return e;
    }

    @Test
    void aCudaLibtorchWithoutTheDriverIsToldTheDriverIsMissing() {
        String message = TorchSetup.loadFailure(failedLoad("/v/torch/lib/libcaffe2_nvrtc.so: libcuda.so.1: cannot "
                + "open shared object file: No such file or directory"));
        assertTrue(message.startsWith("not loaded: "), message);
        assertTrue(message.contains(": /v/torch/lib/libcaffe2_nvrtc.so: libcuda.so.1: cannot open shared object file: "
                + "No such file or directory: libcuda.so.1 comes with the NVIDIA driver, which this machine lacks"),
                message);
    }

    @Test
    void aMissingCudaLibraryIsNamedWithWherePipPutsIt() {
        String message = TorchSetup.loadFailure(failedLoad("/v/torch/lib/libtorch_cuda.so: libcudart.so.13: cannot "
                + "open shared object file: No such file or directory"));
        assertTrue(message.contains("No such file or directory: libcudart.so.13 is needed by this libtorch and not "
                + "found (pip installs CUDA's libraries as the nvidia-* packages"), message);
    }

    @Test
    void theLoadersRepeatedPathIsSaidOnceAndAMissingSymbolNamed() {
        String message = TorchSetup.loadFailure(failedLoad("/v/lib/libdjl_torch.so: /v/lib/libdjl_torch.so: undefined "
                + "symbol: _ZN2at4_ops10from_blob4callEv"));
        assertTrue(message.contains(": /v/lib/libdjl_torch.so: undefined symbol: _ZN2at4_ops10from_blob4callEv: the "
                + "libraries do not fit together"), message);
    }

    /**
     * A libtorch of another version with no JNI built for it: DJL looks in the folder, its cache and the jar, then
     * tries to download one, which offline ends in "Offline mode is enabled." (seen with pip torch 2.13.0+cpu and
     * PYTORCH_VERSION=2.13.0). The hint names the two places a built JNI is looked for.
     */
    @Test
    void aVersionWithoutAJniIsToldWhereOneIsLookedFor(@TempDir Path dir) throws IOException {
        Path lib = Files.createDirectories(dir.resolve("torch/lib"));
        Files.writeString(lib.resolve("libtorch.so"), "");
        Map<String, String> settings = Map.of("PYTORCH_LIBRARY_PATH", lib.toString(), "PYTORCH_VERSION", "2.13.0",
                "PYTORCH_FLAVOR", "cpu", "ENGINE_CACHE_DIR", dir.resolve("cache").toString());
        settings.forEach(System::setProperty);
        try {
            String message = TorchSetup.loadFailure(failedLoad("Offline mode is enabled."));
            assertTrue(message.startsWith("not loaded: " + lib.toAbsolutePath() + " (PYTORCH_LIBRARY_PATH, "
                    + "PYTORCH_VERSION=2.13.0, PYTORCH_FLAVOR=cpu): Offline mode is enabled: DJL has no JNI for libtorch "
                    + "2.13.0 cpu (the pytorch-jni jar carries 2.7.1's, cpu and cu128; one built by "
                    + "bench/gpu/build-jni.sh for this torch is looked for as " + lib.toAbsolutePath()
                    + "/0.35.1-libdjl_torch.so and as " + dir.resolve("cache") + "/pytorch/2.13.0-cpu-linux-x86_64/"
                    + "0.35.1-libdjl_torch.so)"), message);
        } finally {
            settings.keySet().forEach(System::clearProperty);
        }
    }

    /** PYTORCH_LIBRARY_PATH alone: apply() gives DJL the version and flavor the folder tells, and overrides nothing. */
    @Test
    void applyTellsDjlTheVersionAndFlavorOfTheFolder(@TempDir Path dir) throws IOException {
        Path lib = Files.createDirectories(dir.resolve("torch/lib"));
        Files.writeString(lib.resolve("libtorch.so"), "");
        Files.writeString(dir.resolve("torch/version.py"), "__version__ = '2.14.1+cu130'\ncuda: Optional[str] = '13.0'\n");
        assertNull(TorchSetup.envOrProperty("PYTORCH_VERSION"), "a test machine sets no PYTORCH_VERSION");
        System.setProperty("PYTORCH_LIBRARY_PATH", lib.toString());
        try {
            TorchSetup.apply(false);
            assertEquals("2.14.1", System.getProperty("PYTORCH_VERSION"));
            assertEquals("cu130", System.getProperty("PYTORCH_FLAVOR"));
            System.setProperty("PYTORCH_VERSION", "2.14.0");
            TorchSetup.apply(false);
            assertEquals("2.14.0", System.getProperty("PYTORCH_VERSION"), "a version the user set stays");
        } finally {
            List.of("PYTORCH_LIBRARY_PATH", "PYTORCH_VERSION", "PYTORCH_FLAVOR").forEach(System::clearProperty);
        }
    }

    /** libtorch's own errors at run time are EngineExceptions too, thrown once the engine is up: not a load failure. */
    @Test
    void anEngineExceptionAfterLoadingIsNotALoadFailure() {
        assertNull(TorchSetup.loadFailure(new EngineException("set_stride is not allowed on a Tensor created from "
                + ".data or .detach()")));
        assertNull(TorchSetup.loadFailure(new IllegalStateException("Failed to load PyTorch native library")));
        assertNull(TorchSetup.loadFailure(new RuntimeException()));
    }
}
