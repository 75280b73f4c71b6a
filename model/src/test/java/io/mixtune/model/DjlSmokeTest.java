package io.mixtune.model;

import ai.djl.ndarray.*;
import ai.djl.ndarray.types.*;
import org.junit.jupiter.api.Test;

class DjlSmokeTest {
    @Test
    void engineLoadsOffline() {
        try (NDManager m = NDManager.newBaseManager()) {
            NDArray a = m.arange(6f).reshape(2, 3);
            System.out.println(a.matMul(a.transpose()));
            System.out.println(ai.djl.engine.Engine.getInstance().getEngineName() + " " + ai.djl.engine.Engine.getInstance().getVersion());
        }
    }
}
