package io.mixtune.model.generate;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import io.mixtune.model.mistral.CausalLm;
import java.util.Collection;
import java.util.List;

/**
 * Proxy-tuning (Liu et al. 2024, "Tuning Language Models by Proxy"): a large model steered at decode time by what
 * tuning did to a small one, logits = large + alpha (smallTuned - smallBase), then the usual softmax and sampling.
 * The three models read the same tokens, so they must share one vocabulary; each keeps its own KV cache.
 *
 * <p>The sum is taken in float64 and rounded once to float32: alpha 0 gives the large model's logits bit for bit, and
 * a large model equal to the small base gives the tuned model's logits bit for bit at alpha 1.
 */
public record ProxyTuning(CausalLm large, CausalLm smallBase, CausalLm smallTuned, double alpha) {

    public ProxyTuning {
        if (!Double.isFinite(alpha)) {
            throw new IllegalArgumentException("the proxy-tuning alpha must be a finite number, got " + alpha);
        }
        int vocab = large.config().vocabSize();
        if (smallBase.config().vocabSize() != vocab || smallTuned.config().vocabSize() != vocab) {
            throw new IllegalArgumentException("vocab_size " + vocab + " (large), " + smallBase.config().vocabSize()
                    + " (small base) and " + smallTuned.config().vocabSize() + " (small tuned) differ: proxy-tuning"
                    + " adds logits token by token, so the three models need one vocabulary");
        }
    }

    /** Generation from the combined logits: the three models in lockstep, ended by the large model's EOS ids. */
    public Generator generator(Collection<Integer> eosTokenIds) {
        return new Generator(List.of(large, smallBase, smallTuned), rows -> combine(rows[0], rows[1], rows[2], alpha),
                eosTokenIds);
    }

    /** large + alpha (tuned - base), element by element, summed in float64 and rounded once. */
    public static float[] combine(float[] large, float[] base, float[] tuned, double alpha) {
        float[] combined = new float[large.length];
        for (int i = 0; i < combined.length; i++) {
            combined[i] = (float) (large[i] + alpha * ((double) tuned[i] - base[i]));
        }
        return combined;
    }

    /** {@link #combine(float[], float[], float[], double)} on arrays of logits of one shape, float32, no gradient. */
    public NDArray combine(NDArray largeLogits, NDArray baseLogits, NDArray tunedLogits) {
        NDArray l = largeLogits.toType(DataType.FLOAT64, false);
        NDArray b = baseLogits.toType(DataType.FLOAT64, false);
        NDArray t = tunedLogits.toType(DataType.FLOAT64, false);
        return l.add(t.sub(b).mul(alpha)).toType(DataType.FLOAT32, false);
    }
}
