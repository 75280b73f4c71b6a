package io.mixtune.trainer.run;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.training.GradientCollector;
import io.mixtune.lora.nf4.RecomputedWeights;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.mistral.DecoderLayer;
import io.mixtune.model.nn.RotaryEmbedding;
import io.mixtune.model.nn.Scalars;
import java.util.ArrayList;
import java.util.List;

/**
 * Gradient checkpointing with one segment per decoder layer (Chen et al. 2016, "Training deep nets with sublinear
 * memory cost"): the forward pass runs without autograd and keeps only each layer's input; the head (final norm,
 * lm_head, cross-entropy) then runs with autograd and gives the gradient at the last layer's output; and backward goes
 * down the layers, recomputing each one with autograd and backpropagating the gradient that arrived at its output. So
 * activation memory is layers x tokens x hidden plus one layer's graph, for one more forward pass of compute. The head
 * is the caller's: SFT's summed cross-entropy, or DPO's loss over the sequences' log-probabilities.
 *
 * <p>A layer's backward is that of sum(output * upstream) (+ auxWeight x its part of the load-balancing loss): the
 * same vector-Jacobian product as backward(output, upstream), with the aux term in the same pass. Dropout is seeded
 * per layer, so the recompute draws the masks of the first pass. The recomputed layer's NF4 weights are not kept for
 * its backward ({@link RecomputedWeights}): dequantized again one at a time when the gradient of their input is due.
 */
public final class CheckpointedBackward {
    private CheckpointedBackward() {}

    /**
     * Backward of head's objective + auxWeight x the load-balancing loss, accumulating into the parameters' gradients
     * ({@link DecoderBackward#run} with checkpointing).
     *
     * @return the load-balancing loss, NaN for a dense model
     */
    static double run(CausalLm model, TrainingBatch batch, DecoderBackward.Head head, double auxWeight,
            long dropoutSeed, EmbeddingNoise noise, NDManager manager) {
        try (NDManager step = manager.newSubManager()) {
            CausalLmLoss.Inputs in = CausalLmLoss.inputs(model, batch, step);
            int layers = model.layerCount();

            // Forward without autograd, keeping each layer's input, the float32 residual (and the router logits, for
            // the top-k counts).
            List<NDArray> layerInputs = new ArrayList<>();
            List<NDArray> routerLogits = new ArrayList<>();
            NDArray h = noise.apply(model.embed(in.inputIds()), batch, dropoutSeed); // layer 0 recomputes on it
            RotaryEmbedding.Angles angles = model.anglesAt(in.positionIds());
            for (int i = 0; i < layers; i++) {
                layerInputs.add(h);
                try (NDManager layer = step.newSubManager()) {
                    h.tempAttach(layer); // the layer's intermediates land in `layer` and go with it
                    CausalLmLoss.seedDropout(dropoutSeed, i);
                    DecoderLayer.Output out = model.layer(i, h, angles, in.mask());
                    h = out.hidden();
                    h.attach(step);
                    if (out.routerLogits() != null) {
                        out.routerLogits().attach(step);
                        routerLogits.add(out.routerLogits());
                    }
                }
            }

            // The head with autograd: the gradient of its objective at the last layer's output.
            h.setRequiresGradient(true);
            try (NDManager headManager = step.newSubManager();
                    GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                h.tempAttach(headManager);
                collector.backward(head.objective(model.finalNorm(h), headManager));
            }
            NDArray upstream = h.getGradient();

            // The load-balancing loss's top-k counts and value, from the first pass's router logits.
            NDArray load = null;
            double loadBalancing = Double.NaN;
            long routed = CausalLmLoss.routedTokens(batch, routerLogits.size());
            if (!routerLogits.isEmpty()) {
                load = CausalLmLoss.expertLoad(routerLogits, model.config().numExpertsPerTok(), in.realTokens());
                NDArray weights = in.realTokens() == null ? null : in.realTokens().tile(routerLogits.size());
                loadBalancing = CausalLmLoss.loadBalancingPart(NDArrays.concat(new NDList(routerLogits), 0), load,
                        weights, routed).getFloat();
            }

            // Backward, one recomputed layer at a time from the top.
            for (int i = layers - 1; i >= 0; i--) {
                NDArray x = layerInputs.get(i);
                if (i > 0) {
                    x.setRequiresGradient(true); // layer 0's input is the embedding, which trains nothing
                }
                try (NDManager layer = step.newSubManager();
                        GradientCollector collector = Engine.getInstance().newGradientCollector();
                        RecomputedWeights recomputed = RecomputedWeights.record(layer)) {
                    x.tempAttach(layer);
                    CausalLmLoss.seedDropout(dropoutSeed, i);
                    DecoderLayer.Output out = model.layer(i, x, angles, in.mask());
                    NDArray objective = out.hidden().mul(upstream).sum();
                    if (load != null && auxWeight > 0) {
                        objective = objective.add(Scalars.times(CausalLmLoss.loadBalancingPart(out.routerLogits(),
                                load, in.realTokens(), routed), auxWeight));
                    }
                    recomputed.backward(objective);
                }
                upstream.close();
                upstream = i > 0 ? x.getGradient() : null;
                x.close();
            }
            return loadBalancing;
        }
    }
}
