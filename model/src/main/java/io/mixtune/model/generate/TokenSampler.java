package io.mixtune.model.generate;

import java.util.Arrays;
import java.util.Random;

/**
 * Picks the next token from the last position's logits: greedy, or sampled after temperature and nucleus (top-p)
 * filtering in the order transformers applies them, from a seeded generator so a run can be repeated.
 */
public final class TokenSampler {
    private final boolean greedy;
    private final double temperature;
    private final double topP;
    private final Random random;

    private TokenSampler(boolean greedy, double temperature, double topP, long seed) {
        this.greedy = greedy;
        this.temperature = temperature;
        this.topP = topP;
        this.random = new Random(seed);
    }

    public static TokenSampler greedy() {
        return new TokenSampler(true, 1, 1, 0);
    }

    public static TokenSampler sampling(double temperature, double topP, long seed) {
        if (!(temperature > 0)) {
            throw new IllegalArgumentException("temperature must be > 0 (use greedy decoding for 0), got " + temperature);
        }
        if (!(topP > 0 && topP <= 1)) {
            throw new IllegalArgumentException("top-p must lie in (0, 1], got " + topP);
        }
        return new TokenSampler(false, temperature, topP, seed);
    }

    public int next(float[] logits) {
        if (greedy) {
            return argmax(logits);
        }
        int vocab = logits.length;
        double max = Double.NEGATIVE_INFINITY;
        for (float logit : logits) {
            max = Math.max(max, logit / temperature);
        }
        double[] probabilities = new double[vocab];
        double total = 0;
        for (int i = 0; i < vocab; i++) {
            probabilities[i] = Math.exp(logits[i] / temperature - max);
            total += probabilities[i];
        }
        Integer[] order = new Integer[vocab];
        for (int i = 0; i < vocab; i++) {
            order[i] = i;
            probabilities[i] /= total;
        }
        Arrays.sort(order, (a, b) -> Double.compare(probabilities[b], probabilities[a]));
        // Keep the most likely tokens until their mass reaches top-p (always at least one), then renormalise.
        double kept = 0;
        int keep = 0;
        while (keep < vocab && (keep == 0 || kept < topP)) {
            kept += probabilities[order[keep++]];
        }
        double draw = random.nextDouble() * kept;
        for (int i = 0; i < keep; i++) {
            draw -= probabilities[order[i]];
            if (draw <= 0) {
                return order[i];
            }
        }
        return order[keep - 1];
    }

    /** First index of the largest logit, as torch.argmax picks. */
    public static int argmax(float[] logits) {
        int best = 0;
        for (int i = 1; i < logits.length; i++) {
            if (logits[i] > logits[best]) {
                best = i;
            }
        }
        return best;
    }
}
