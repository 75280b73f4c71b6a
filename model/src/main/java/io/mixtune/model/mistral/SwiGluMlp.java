package io.mixtune.model.mistral;

import ai.djl.ndarray.NDArray;
import ai.djl.nn.Activation;
import io.mixtune.model.nn.Linear;

/**
 * down(silu(gate(x)) * up(x)) (Shazeer 2020). Mistral names the three layers gate_proj, up_proj and down_proj; a
 * Mixtral expert names them w1, w3 and w2.
 */
public final class SwiGluMlp {
    private final String gateName;
    private final String upName;
    private final String downName;
    private Linear gate;
    private Linear up;
    private Linear down;

    public static SwiGluMlp mistral(Linear gateProj, Linear upProj, Linear downProj) {
        return new SwiGluMlp("gate_proj", "up_proj", "down_proj", gateProj, upProj, downProj);
    }

    public static SwiGluMlp mixtralExpert(Linear w1, Linear w3, Linear w2) {
        return new SwiGluMlp("w1", "w3", "w2", w1, w3, w2);
    }

    private SwiGluMlp(String gateName, String upName, String downName, Linear gate, Linear up, Linear down) {
        this.gateName = gateName;
        this.upName = upName;
        this.downName = downName;
        this.gate = gate;
        this.up = up;
        this.down = down;
    }

    public NDArray forward(NDArray x) {
        NDArray gated = gate.forward(x);
        return down.forward(gated.mul(Activation.sigmoid(gated)).mul(up.forward(x)));
    }

    void replaceLinears(String prefix, Linear.Replacer replacer) {
        gate = replacer.replace(prefix + "." + gateName, gate);
        up = replacer.replace(prefix + "." + upName, up);
        down = replacer.replace(prefix + "." + downName, down);
    }
}
