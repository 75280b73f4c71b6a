package io.mixtune.trainer.device;

import java.util.List;

/** The exact steps that give mixtune a CUDA libtorch, printed by `mixtune env` and by a `device: gpu` refusal. */
public final class GpuSetup {
    private GpuSetup() {}

    public static final List<String> STEPS = List.of(
            "1. an existing libtorch " + TorchSource.VERSION + " for CUDA 12.8 (no network at run time), e.g. from pip:",
            "     python3 -m venv ~/torch271 && ~/torch271/bin/pip install torch==" + TorchSource.VERSION
                    + " --index-url https://download.pytorch.org/whl/" + TorchSource.CUDA_FLAVOR,
            "     export PYTORCH_LIBRARY_PATH=$(~/torch271/bin/python -c 'import torch, os; "
                    + "print(os.path.dirname(torch.__file__))')/lib",
            "     export PYTORCH_VERSION=" + TorchSource.VERSION + " PYTORCH_FLAVOR=" + TorchSource.CUDA_FLAVOR,
            "2. or let DJL download libtorch " + TorchSource.VERSION + " " + TorchSource.CUDA_FLAVOR
                    + " once into its cache (~/.djl.ai/pytorch; run time is offline unless you allow this):",
            "     mixtune env --allow-download        (or MIXTUNE_ALLOW_DOWNLOAD=1 mixtune env)",
            "   later runs, offline: export PYTORCH_LIBRARY_PATH=~/.djl.ai/pytorch/" + TorchSource.VERSION + "-"
                    + TorchSource.CUDA_FLAVOR + "-linux-x86_64 PYTORCH_VERSION=" + TorchSource.VERSION
                    + " PYTORCH_FLAVOR=" + TorchSource.CUDA_FLAVOR,
            "then `mixtune env` should list the GPU; an NVIDIA driver for CUDA 12.8 or newer is needed either way.");

    /** The steps on one line, for an error message. */
    public static String oneLine() {
        return String.join(" ", STEPS.stream().map(String::strip).toList());
    }
}
