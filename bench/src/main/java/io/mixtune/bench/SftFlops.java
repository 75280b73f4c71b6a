package io.mixtune.bench;

import io.mixtune.model.config.ModelConfig;
import java.util.List;

/**
 * FLOPs of one LoRA training step with a frozen base, bench/sft_trl.py's formula (its docstring explains each term), so
 * the Java and the TRL figures count the same work: 4 N_lin T + 4 H V T_tgt + 3 A + 6 N_lora T, where T is the row's
 * tokens, T_tgt its target tokens, N_lin the weights of the linear layers one token goes through (attention q/k/v/o
 * and the MLP, on a Mixtral the top-k experts'), N_lora the sum over the same layers of r x (in + out), and
 * A = 4 x layers x heads x head_dim x the keys the queries attend to (within each sample, causal, sliding window).
 */
final class SftFlops {
    private SftFlops() {}

    /** Weights of the linear layers one token goes through, and r x (in + out) summed over the same layers. */
    record PerToken(long linearWeights, long loraWeights) {}

    static PerToken perToken(ModelConfig config, int r) {
        long h = config.hiddenSize();
        long inter = config.intermediateSize();
        long qOut = (long) config.numAttentionHeads() * config.headDim();
        long kvOut = (long) config.numKeyValueHeads() * config.headDim();
        long[][] attention = {{h, qOut}, {h, kvOut}, {h, kvOut}, {qOut, h}};
        long[][] mlp = {{h, inter}, {h, inter}, {inter, h}};
        int activeMlps = config.isMixtureOfExperts() ? config.numExpertsPerTok() : 1;
        long linear = 0;
        long lora = 0;
        for (long[] layer : attention) {
            linear += layer[0] * layer[1];
            lora += r * (layer[0] + layer[1]);
        }
        for (long[] layer : mlp) {
            linear += activeMlps * layer[0] * layer[1];
            lora += activeMlps * r * (layer[0] + layer[1]);
        }
        return new PerToken(config.numHiddenLayers() * linear, config.numHiddenLayers() * lora);
    }

    /** Keys summed over the queries of one sample: causal, and at most {@code window} of them (q - k < window). */
    static long attendedKeys(long length, Integer window) {
        if (window == null || window >= length) {
            return length * (length + 1) / 2;
        }
        return (long) window * (window + 1) / 2 + (length - window) * window;
    }

    /** One step on a row holding samples of these lengths, with {@code targets} target tokens. */
    static double step(ModelConfig config, int r, List<Integer> sampleLengths, int targets) {
        PerToken perToken = perToken(config, r);
        long tokens = 0;
        long keys = 0;
        for (int length : sampleLengths) {
            tokens += length;
            keys += attendedKeys(length, config.slidingWindow());
        }
        double attention = 4.0 * config.numHiddenLayers() * config.numAttentionHeads() * config.headDim() * keys;
        double head = (double) config.hiddenSize() * config.vocabSize();
        return 4.0 * perToken.linearWeights() * tokens + 4 * head * targets + 3 * attention
                + 6.0 * perToken.loraWeights() * tokens;
    }
}
