package io.mixtune.model.nn;

import ai.djl.Device;
import ai.djl.ndarray.NDManager;

/** The host-memory manager of the process's constants, open for the process's life (its arrays are closed by users). */
final class HostConstants {
    static final NDManager MANAGER = NDManager.newBaseManager(Device.cpu());

    private HostConstants() {}
}
