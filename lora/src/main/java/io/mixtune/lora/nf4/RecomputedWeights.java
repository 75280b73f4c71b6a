package io.mixtune.lora.nf4;

import ai.djl.engine.EngineException;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import java.util.ArrayList;
import java.util.List;

/**
 * A scope in which NF4 layers keep no dequantized weight for the backward pass, as bitsandbytes' MatMul4Bit does
 * (autograd/_functions.py: the forward saves the packed 4-bit weight, and the backward dequantizes it again for
 * grad_A = grad_output @ W). DJL cannot define an autograd Function from Java, so the gradient of x W^T is cut out of
 * the graph instead: inside the scope an {@link Nf4Linear} computes y = x W^T on x detached, frees W, and hands on y
 * as a leaf that takes a gradient. {@link #backward} then runs the graph's backward and, newest layer first, turns
 * each leaf's gradient g into g W (W dequantized again and freed at once) and backpropagates it from x into the rest
 * of the graph: into the adapters, the layer's input and the leaves of earlier layers. So the backward of what was
 * recorded holds at most one dequantized weight at a time.
 *
 * <p>Layers that read the same input one after the other (q, k and v; an MLP's gate and up, an expert's w1 and w3)
 * are one cut: their g W are summed and backpropagated once. Use it as {@code try (var cuts =
 * RecomputedWeights.record(manager)) { ...forward...; cuts.backward(loss); }}, on one thread, inside a
 * GradientCollector (autograd's grad mode on; it never zeroes gradients, so the several backward calls accumulate as
 * one would); closing the scope ends the recording whatever happened inside. What it costs: each leaf and its gradient
 * stay until the scope closes, and an input that takes no gradient still gets its g W computed.
 */
public final class RecomputedWeights implements AutoCloseable {
    private static final ThreadLocal<RecomputedWeights> ACTIVE = new ThreadLocal<>();

    /**
     * Layers that read one input array, in forward order, and their outputs (leaves); {@code adapterInput} is the same
     * input as a leaf, for the adapters on these layers to read.
     */
    private record Cut(NDArray input, NDArray adapterInput, List<Nf4Linear> layers, List<NDArray> outputs) {}

    private final List<Cut> cuts = new ArrayList<>();
    /** The leaves: the layers' callers get views of them, which they may close as they like. */
    private final NDManager leaves;

    private RecomputedWeights(NDManager leaves) {
        this.leaves = leaves;
    }

    /** Starts recording on this thread; the layers' outputs live in a sub-manager of {@code manager} until close. */
    public static RecomputedWeights record(NDManager manager) {
        if (ACTIVE.get() != null) {
            throw new IllegalStateException("NF4 weights are already being recorded for recomputation on this thread");
        }
        RecomputedWeights recording = new RecomputedWeights(manager.newSubManager());
        ACTIVE.set(recording);
        return recording;
    }

    /** The recording open on this thread, else null. */
    static RecomputedWeights active() {
        return ACTIVE.get();
    }

    /** {@code layer}'s forward on x: y = x W^T, a leaf, W freed. */
    NDArray cut(Nf4Linear layer, NDArray x) {
        NDArray y;
        try (NDArray detached = x.stopGradient();
                NDArray weight = layer.dequantizedWeight(x.getManager(), x.getDataType())) {
            y = ai.djl.nn.core.Linear.linear(detached, weight).singletonOrThrow();
        }
        y.attach(leaves);
        y.setRequiresGradient(true);
        Cut last = lastCutOf(x);
        if (last != null) {
            last.layers().add(layer);
            last.outputs().add(y);
        } else {
            NDArray adapterInput = x.stopGradient();
            adapterInput.attach(leaves);
            adapterInput.setRequiresGradient(true);
            cuts.add(new Cut(x, adapterInput, new ArrayList<>(List.of(layer)), new ArrayList<>(List.of(y))));
        }
        return y.reshape(y.getShape()); // a view: gradients reach the leaf through it
    }

    /** The newest cut when it reads {@code x}, else null. */
    private Cut lastCutOf(NDArray x) {
        Cut last = cuts.isEmpty() ? null : cuts.get(cuts.size() - 1);
        return last != null && last.input() == x ? last : null;
    }

    /**
     * What an adapter on a layer that just read x should read: under a recording, x as a leaf of its own (the same
     * memory), so the graph's backward stops there too, and the adapters' gradient joins the layers' g W before one
     * backward from x. Without it every layer's backward would run again through everything below it (attention
     * included) once for the adapters' part and once for the base's. Else x itself.
     */
    public static NDArray adapterInput(NDArray x) {
        RecomputedWeights recording = ACTIVE.get();
        Cut cut = recording == null ? null : recording.lastCutOf(x);
        return cut == null ? x : cut.adapterInput();
    }

    /**
     * Backward of {@code objective} (a scalar) through what was recorded, accumulating into the gradients of every
     * array that takes one, as a plain backward would (up to float rounding: the gradient of x W^T is added at another
     * point of the sum). The graph is kept until its arrays close: later cuts run through parts of it again.
     */
    public void backward(NDArray objective) {
        try (NDArray ones = objective.onesLike()) {
            JniUtils.backward((PtNDArray) objective, (PtNDArray) ones, true, false);
        }
        // Newest first: a cut's outputs have then received every gradient (later layers only read earlier outputs,
        // and the layers of one cut read the same input, never each other's outputs).
        for (int i = cuts.size() - 1; i >= 0; i--) {
            Cut cut = cuts.get(i);
            NDArray inputGradient = JniUtils.getGradient((PtNDArray) cut.adapterInput());
            for (int j = 0; j < cut.layers().size(); j++) {
                PtNDArray outputGradient = JniUtils.getGradient((PtNDArray) cut.outputs().get(j));
                if (outputGradient == null) {
                    continue; // nothing downstream used this output
                }
                try (outputGradient;
                        NDArray weight = cut.layers().get(j).dequantizedWeight(outputGradient.getManager(),
                                outputGradient.getDataType())) {
                    NDArray part = outputGradient.matMul(weight);
                    if (inputGradient == null) {
                        inputGradient = part;
                    } else {
                        inputGradient.addi(part);
                        part.close();
                    }
                }
            }
            if (inputGradient != null) {
                try (NDArray gradient = inputGradient) {
                    JniUtils.backward((PtNDArray) cut.input(), (PtNDArray) gradient, true, false);
                } catch (EngineException e) {
                    // DJL cannot ask whether a computed array takes a gradient (its requiresGrad answers false for
                    // every non-leaf), so an input that takes none (the first layer's q/k/v read the embeddings,
                    // which train nothing) is found here, where libtorch refuses to backpropagate into it.
                    if (e.getMessage() == null || !e.getMessage().contains("does not require grad")) {
                        throw e;
                    }
                }
            }
        }
    }

    @Override
    public void close() {
        if (ACTIVE.get() == this) {
            ACTIVE.remove();
        }
        cuts.clear();
        leaves.close();
    }
}
