package io.mixtune.trainer.device;

import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.EngineException;
import org.junit.jupiter.api.Test;

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

    /** libtorch's own errors at run time are EngineExceptions too, thrown once the engine is up: not a load failure. */
    @Test
    void anEngineExceptionAfterLoadingIsNotALoadFailure() {
        assertNull(TorchSetup.loadFailure(new EngineException("set_stride is not allowed on a Tensor created from "
                + ".data or .detach()")));
        assertNull(TorchSetup.loadFailure(new IllegalStateException("Failed to load PyTorch native library")));
        assertNull(TorchSetup.loadFailure(new RuntimeException()));
    }
}
