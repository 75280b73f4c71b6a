package io.mixtune.lora.adapter;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.nn.norm.Dropout;
import io.mixtune.lora.nf4.RecomputedWeights;
import io.mixtune.model.nn.Casts;
import io.mixtune.model.nn.Linear;
import io.mixtune.model.nn.Scalars;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

/**
 * A linear layer with LoRA adapters (Hu et al. 2021) on top: y = base(x) + B(A(dropout(x))) * scale, as PEFT's
 * LoraLayer. The base layer (dense or NF4) stays frozen; A [r, in] and B [out, r] are fp32 and trainable. Several
 * named adapters can be loaded; at most one is active, and all can be switched off (DPO's reference model is the base
 * with its adapter off).
 */
public final class LoraLinear implements Linear {
    private final Linear base;
    private final Map<String, Adapter> adapters = new LinkedHashMap<>();
    private String active;
    private boolean enabled = true;
    private boolean training;

    /** One adapter's weights. */
    public record Adapter(NDArray a, NDArray b, double scale, double dropout) {
        public int rank() {
            return (int) a.getShape().get(0);
        }
    }

    public LoraLinear(Linear base) {
        this.base = base;
    }

    public Linear base() {
        return base;
    }

    void add(String name, Adapter adapter) {
        if (adapter.a().getShape().get(1) != base.inFeatures() || adapter.b().getShape().get(0) != base.outFeatures()
                || adapter.b().getShape().get(1) != adapter.a().getShape().get(0)) {
            throw new IllegalArgumentException("adapter " + name + ": A " + adapter.a().getShape() + " and B "
                    + adapter.b().getShape() + " do not fit a layer of " + base.inFeatures() + " inputs and "
                    + base.outFeatures() + " outputs (A is [r, in], B is [out, r])");
        }
        adapters.put(name, adapter);
        if (active == null) {
            active = name;
        }
    }

    /** Drops an adapter and frees its arrays; if it was active, the first one left (if any) becomes active. */
    void remove(String name) {
        Adapter removed = adapters.remove(name);
        if (removed != null) {
            removed.a().close();
            removed.b().close();
        }
        if (name.equals(active)) {
            active = adapters.isEmpty() ? null : adapters.keySet().iterator().next();
        }
    }

    public Adapter adapter(String name) {
        return adapters.get(name);
    }

    public Set<String> adapterNames() {
        return adapters.keySet();
    }

    void setActive(String name) {
        active = name;
    }

    void setEnabled(boolean enabled) {
        this.enabled = enabled;
    }

    void setTraining(boolean training) {
        this.training = training;
    }

    @Override
    public NDArray forward(NDArray x) {
        Adapter adapter = enabled && active != null ? adapters.get(active) : null;
        if (adapter == null) {
            return base.forward(x);
        }
        // The update's intermediates (B A x, its scaled and float32 copies) close with `scratch` once the output
        // exists, as PyTorch frees them: autograd keeps its own references to what the backward needs (the dropout
        // mask, A's input, A x), and those stay alive however the arrays are closed.
        NDManager caller = x.getManager();
        try (NDManager scratch = caller.newSubManager()) {
            NDArray y = base.forward(x);
            y.attach(scratch);
            NDArray input = RecomputedWeights.adapterInput(x);
            input.tempAttach(scratch);
            NDArray output = withUpdate(y, input, adapter);
            output.attach(caller);
            return output;
        }
    }

    private NDArray withUpdate(NDArray y, NDArray x, Adapter adapter) {
        NDArray input = training && adapter.dropout() > 0
                ? Dropout.dropout(x, (float) adapter.dropout(), true).singletonOrThrow()
                : x;
        NDArray a = adapter.a();
        NDArray b = adapter.b();
        input = Casts.to(input, a.getDataType());
        NDArray down = ai.djl.nn.core.Linear.linear(input, a).singletonOrThrow();
        NDArray update;
        if (isPowerOfTwo(adapter.scale())) {
            // Scaling by 2^k commutes with rounding, so it can go on the [tokens, r] side instead of PEFT's
            // [tokens, out] with the same bits (a pass over the output fewer, forward and backward); a scale of 1 is
            // no multiplication at all.
            update = ai.djl.nn.core.Linear.linear(adapter.scale() == 1 ? down : Scalars.times(down, adapter.scale()),
                    b).singletonOrThrow();
        } else {
            update = Scalars.times(ai.djl.nn.core.Linear.linear(down, b).singletonOrThrow(), adapter.scale());
        }
        if (update.getDataType() == y.getDataType()) {
            return y.add(update);
        }
        // A float16 base output and a float32 update: added in float32 and rounded once, as PEFT does.
        return Casts.to(Casts.to(y, update.getDataType()).add(update), y.getDataType());
    }

    private static boolean isPowerOfTwo(double scale) {
        return scale > 0 && scale == Math.scalb(1.0, Math.getExponent(scale));
    }

    @Override
    public long inFeatures() {
        return base.inFeatures();
    }

    @Override
    public long outFeatures() {
        return base.outFeatures();
    }
}
