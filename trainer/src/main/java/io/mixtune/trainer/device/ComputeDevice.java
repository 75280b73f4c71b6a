package io.mixtune.trainer.device;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.engine.StandardCapabilities;
import ai.djl.pytorch.jni.LibUtils;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * The device a run's arrays live on, from model.device (or --device): auto is the GPU when libtorch was built with
 * CUDA and sees a GPU, else the CPU; gpu demands one; cpu forces the CPU even where a GPU exists. Callers pass the
 * device to every NDManager.newBaseManager: DJL's default device is the GPU whenever the driver reports one, even
 * when the loaded libtorch is the CPU build.
 */
public final class ComputeDevice {
    private ComputeDevice() {}

    /** @param setting auto, cpu or gpu */
    public static Device choose(String setting) {
        return switch (setting) {
            case "cpu" -> Device.cpu();
            case "auto" -> gpuUsable() ? Device.gpu(0) : Device.cpu();
            case "gpu" -> {
                if (!gpuUsable()) {
                    throw new NoGpuException("device: gpu asked for, but " + whyNoGpu() + ". Set up: "
                            + GpuSetup.oneLine() + " (mixtune env shows what is loaded)");
                }
                yield Device.gpu(0);
            }
            default -> throw new IllegalArgumentException("device: expected auto, cpu or gpu, got '" + setting + "'");
        };
    }

    /** libtorch was built with CUDA, initialises it and sees at least one GPU. */
    public static boolean gpuUsable() {
        Engine engine = Engine.getInstance();
        return engine.hasCapability(StandardCapabilities.CUDA) && engine.getGpuCount() > 0;
    }

    /** Why {@link #gpuUsable()} is false, as a clause. */
    public static String whyNoGpu() {
        Engine engine = Engine.getInstance();
        String loaded = "libtorch " + LibUtils.getVersion() + " loaded from " + LibUtils.getLibtorchPath();
        if (!engine.hasCapability(StandardCapabilities.CUDA)) {
            // DJL's CUDA capability is torch::cuda::is_available(): false for a CPU build and for a CUDA build that
            // finds no GPU; only a CUDA build has libtorch_cuda.so beside libtorch.so
            return Files.exists(Path.of(LibUtils.getLibtorchPath(), "libtorch_cuda.so"))
                    ? loaded + ", a CUDA build, finds no GPU (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides them)"
                    : loaded + " is a CPU build";
        }
        return loaded + " sees no GPU";
    }
}
