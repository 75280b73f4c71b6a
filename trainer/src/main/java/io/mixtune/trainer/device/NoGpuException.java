package io.mixtune.trainer.device;

/** A GPU was demanded (device: gpu, --device gpu) and none is usable: a set-up problem, exit code 2. */
public final class NoGpuException extends RuntimeException {
    public NoGpuException(String message) {
        super(message);
    }
}
