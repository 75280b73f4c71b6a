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

    /**
     * libtorch was built with CUDA and sees at least one GPU: DJL's CUDA capability is torch::cuda::is_available(),
     * which is device_count() > 0. Not DJL's Engine.getGpuCount(): that asks libcudart through JNA, which looks only in
     * the dynamic linker's folders, and a pip torch's libcudart lies in site-packages/nvidia/.../lib, loaded by
     * libtorch_cuda.so's own run path; it would report no GPU beside a working one.
     */
    public static boolean gpuUsable() {
        return Engine.getInstance().hasCapability(StandardCapabilities.CUDA);
    }

    /** Why {@link #gpuUsable()} is false, as a clause. */
    public static String whyNoGpu() {
        String loaded = "libtorch " + LibUtils.getVersion() + " loaded from " + LibUtils.getLibtorchPath();
        // only a CUDA build has libtorch_cuda.so beside libtorch.so
        return Files.exists(Path.of(LibUtils.getLibtorchPath(), "libtorch_cuda.so"))
                ? loaded + ", a CUDA build, finds no GPU (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides them)"
                : loaded + " is a CPU build";
    }
}
