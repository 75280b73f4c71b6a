package io.mixtune.lora.adapter;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.nn.norm.Dropout;
import io.mixtune.lora.nf4.Nf4Linear;
import io.mixtune.lora.nf4.RecomputedWeights;
import io.mixtune.model.nn.Casts;
import io.mixtune.model.nn.DenseLinear;
import io.mixtune.model.nn.Linear;
import io.mixtune.model.nn.Scalars;
import io.mixtune.model.nn.WithoutGrad;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

/**
 * A linear layer with LoRA adapters (Hu et al. 2021) on top: y = base(x) + B(A(dropout(x))) * scale, as PEFT's
 * LoraLayer. The base layer (dense or NF4) stays frozen; A [r, in] and B [out, r] are fp32 and trainable. Several
 * named adapters can be loaded; at most one is active, and all can be switched off (DPO's reference model is the base
 * with its adapter off). An adapter with a magnitude is DoRA's (withDora).
 */
public final class LoraLinear implements Linear {
    private final Linear base;
    private final Map<String, Adapter> adapters = new LinkedHashMap<>();
    private String active;
    private boolean enabled = true;
    private boolean training;

    /**
     * One adapter's weights.
     *
     * @param magnitude DoRA's magnitude m [out] (float32, trained), PEFT's lora_magnitude_vector; null for plain LoRA
     */
    public record Adapter(NDArray a, NDArray b, double scale, double dropout, NDArray magnitude) {
        /** A plain LoRA adapter. */
        public Adapter(NDArray a, NDArray b, double scale, double dropout) {
            this(a, b, scale, dropout, null);
        }

        public int rank() {
            return (int) a.getShape().get(0);
        }

        public boolean dora() {
            return magnitude != null;
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
        if (adapter.dora() && (adapter.magnitude().getShape().dimension() != 1
                || adapter.magnitude().getShape().get(0) != base.outFeatures())) {
            throw new IllegalArgumentException("adapter " + name + ": DoRA magnitude " + adapter.magnitude().getShape()
                    + " does not fit a layer of " + base.outFeatures() + " outputs (it is [out])");
        }
        if (adapter.dora() && !(base instanceof DenseLinear || base instanceof Nf4Linear)) {
            throw new IllegalArgumentException("adapter " + name + ": DoRA needs the base weight, which a "
                    + base.getClass().getSimpleName() + " does not give");
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
            if (removed.dora()) {
                removed.magnitude().close();
            }
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
            NDArray output = adapter.dora() ? withDora(y, input, adapter) : withUpdate(y, input, adapter);
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

    /**
     * DoRA (Liu et al. 2024) as PEFT 0.21 computes it (tuners/lora/variants.py DoraLinearVariant.forward and
     * dora.py DoraLinearLayer.forward): with s = m / ||W + scale B A|| per output row (the norm over the input dim,
     * detached from the graph as the paper's section 4.3 asks, so A and B get no gradient through it),
     * y = base(x) + ((s - 1) base(x) + s (B A x') scale), in float32 (x' the adapter's input, x cast to A's dtype).
     * Without dropout base(x) is the base layer's own output; with dropout active (training, p > 0) PEFT recomputes
     * it as x' W^T on the dropped input, so the magnitude scales what the adapter saw, and so does this.
     */
    private NDArray withDora(NDArray y, NDArray x, Adapter adapter) {
        NDManager scratch = y.getManager();
        boolean dropped = training && adapter.dropout() > 0;
        NDArray input = Casts.to(dropped ? Dropout.dropout(x, (float) adapter.dropout(), true).singletonOrThrow() : x,
                adapter.a().getDataType());
        NDArray rowScale = weightNormOf(adapter, y.getDataType(), scratch);
        NDArray scale = adapter.magnitude().div(rowScale); // m / ||W + scale B A||, the gradient reaching m alone
        scale.attach(scratch); // made in the magnitude's manager, which lives as long as the adapter
        NDArray lora = ai.djl.nn.core.Linear.linear(ai.djl.nn.core.Linear.linear(input, adapter.a())
                .singletonOrThrow(), adapter.b()).singletonOrThrow();
        NDArray baseResult;
        if (dropped) {
            NDArray weight = baseWeight(scratch, y.getDataType());
            weight.attach(scratch);
            NDArray weight32 = Casts.to(weight, input.getDataType());
            weight32.attach(scratch);
            baseResult = ai.djl.nn.core.Linear.linear(input, weight32).singletonOrThrow();
        } else {
            baseResult = Casts.to(y, input.getDataType());
        }
        NDArray dora = scale.sub(1).mul(baseResult).add(Scalars.times(scale.mul(lora), adapter.scale()));
        if (y.getDataType() == dora.getDataType()) {
            return y.add(dora);
        }
        // A float16 base output: added in float32 and rounded once, as PEFT's result + result_dora then .to(dtype).
        return Casts.to(Casts.to(y, dora.getDataType()).add(dora), y.getDataType());
    }

    /**
     * ||W + scale B A|| per output row [out], in float32, outside autograd: PEFT's get_weight_norm
     * (torch.linalg.norm(weight, dim=1)) on W as the base layer computes with (an NF4 weight dequantized into
     * {@code computeType}, as bitsandbytes' dequantize gives it) cast to float32. The one dequantized weight and the
     * [out, in] product live only for this call.
     */
    NDArray weightNormOf(Adapter adapter, DataType computeType, NDManager manager) {
        return WithoutGrad.get(() -> {
            try (NDManager transient_ = manager.newSubManager()) {
                NDArray weight = baseWeight(transient_, computeType);
                weight.attach(transient_);
                NDArray weight32 = Casts.to(weight, adapter.a().getDataType());
                weight32.attach(transient_);
                NDArray delta = adapter.b().matMul(adapter.a());
                delta.attach(transient_);
                NDArray sum = weight32.add(Scalars.times(delta, adapter.scale()));
                sum.attach(transient_);
                NDArray norm = sum.norm(new int[] {1});
                norm.attach(manager);
                return norm;
            }
        });
    }

    /**
     * The base weight [out, in] in {@code type}, as a new array of {@code manager}'s (an NF4 weight dequantized anew,
     * a dense one copied only when its type differs: the caller must not close what it did not make, so a dense
     * weight in {@code type} comes back as a view).
     */
    private NDArray baseWeight(NDManager manager, DataType type) {
        if (base instanceof Nf4Linear nf4) {
            return nf4.dequantizedWeight(manager, type);
        }
        NDArray weight = ((DenseLinear) base).weight();
        NDArray copy = weight.getDataType() == type ? weight.reshape(weight.getShape()) : weight.toType(type, false);
        copy.attach(manager);
        return copy;
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
