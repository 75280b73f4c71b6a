package io.mixtune.model.generate;

import java.util.Arrays;
import java.util.BitSet;
import java.util.Locale;
import java.util.Random;

/**
 * Picks the next token from the last position's logits as transformers' {@code generate} does: the repetition penalty
 * first (a logits processor, so greedy decoding gets it too), then, when sampling, the warpers in the order of
 * {@code GenerationMixin._get_logits_processor}: temperature, top-k, top-p, min-p; the draw comes from a seeded
 * generator so a run can be repeated (its ids are mixtune's own: torch.multinomial's random stream is not reproduced).
 */
public final class TokenSampler {
    private final Settings settings;
    private final Random random;

    /**
     * What transformers' {@code GenerationConfig} says about choosing a token, with its meaning of each value.
     *
     * @param doSample false: the most likely token (after the repetition penalty)
     * @param temperature logits divided by it, > 0
     * @param topK keep the k most likely tokens (ties with the k-th kept too); 0 keeps all
     * @param topP keep the most likely tokens until their mass reaches it, in (0, 1]
     * @param minP drop tokens less likely than minP times the most likely one, in [0, 1]; 0 drops none
     * @param repetitionPenalty > 0; a token already in the prompt or the answer has a positive logit divided by it, a
     *     negative one multiplied (Keskar et al. 2019, transformers' RepetitionPenaltyLogitsProcessor); 1 changes nothing
     */
    public record Settings(boolean doSample, double temperature, int topK, double topP, double minP,
            double repetitionPenalty) {
        /** transformers' defaults ({@code GenerationConfig._get_default_generation_params}): greedy; top-k 50 when sampling. */
        public static final Settings DEFAULTS = new Settings(false, 1.0, 50, 1.0, 0.0, 1.0);

        public Settings {
            if (!(temperature > 0) || Double.isInfinite(temperature)) {
                throw new IllegalArgumentException("temperature must be a number > 0 (greedy decoding is temperature"
                        + " 0's meaning), got " + temperature);
            }
            if (topK < 0) {
                throw new IllegalArgumentException("top-k must be >= 0 (0 keeps every token), got " + topK);
            }
            if (!(topP > 0 && topP <= 1)) {
                throw new IllegalArgumentException("top-p must lie in (0, 1], got " + topP);
            }
            if (!(minP >= 0 && minP <= 1)) {
                throw new IllegalArgumentException("min-p must lie in [0, 1], got " + minP);
            }
            if (!(repetitionPenalty > 0) || Double.isInfinite(repetitionPenalty)) {
                throw new IllegalArgumentException("repetition penalty must be a number > 0 (1 is none), got "
                        + repetitionPenalty);
            }
        }

        public Settings withTemperature(double value) {
            return new Settings(doSample, value, topK, topP, minP, repetitionPenalty);
        }

        public Settings withTopK(int value) {
            return new Settings(doSample, temperature, value, topP, minP, repetitionPenalty);
        }

        public Settings withTopP(double value) {
            return new Settings(doSample, temperature, topK, value, minP, repetitionPenalty);
        }

        public Settings withMinP(double value) {
            return new Settings(doSample, temperature, topK, topP, value, repetitionPenalty);
        }

        public Settings withRepetitionPenalty(double value) {
            return new Settings(doSample, temperature, topK, topP, minP, value);
        }

        /** "greedy" or "sampled with temperature 0.7, top-k 50, top-p 0.95", and a repetition penalty other than 1. */
        public String describe() {
            StringBuilder text = new StringBuilder();
            if (doSample) {
                text.append(String.format(Locale.ROOT, "sampled with temperature %s, top-k %s, top-p %s",
                        number(temperature), topK == 0 ? "off" : topK, number(topP)));
                if (minP > 0) {
                    text.append(", min-p ").append(number(minP));
                }
            } else {
                text.append("greedy");
            }
            if (repetitionPenalty != 1) {
                text.append(", repetition penalty ").append(number(repetitionPenalty));
            }
            return text.toString();
        }

        private static String number(double value) {
            return value == Math.rint(value) && Math.abs(value) < 1e9 ? String.valueOf((long) value)
                    : String.valueOf(value);
        }
    }

    public TokenSampler(Settings settings, long seed) {
        this.settings = settings;
        this.random = new Random(seed);
    }

    /** Always the most likely token, no repetition penalty. */
    public static TokenSampler greedy() {
        return new TokenSampler(Settings.DEFAULTS, 0);
    }

    public Settings settings() {
        return settings;
    }

    /**
     * @param seen the ids of the prompt and of the answer so far (the repetition penalty's); may be empty
     */
    public int next(float[] logits, BitSet seen) {
        float[] scores = process(logits, seen);
        if (!settings.doSample()) {
            return argmax(scores);
        }
        double max = Double.NEGATIVE_INFINITY;
        for (float score : scores) {
            max = Math.max(max, score);
        }
        double[] weights = new double[scores.length];
        double total = 0;
        int last = -1;
        for (int i = 0; i < scores.length; i++) {
            if (scores[i] != Float.NEGATIVE_INFINITY) {
                weights[i] = Math.exp(scores[i] - max);
                total += weights[i];
                last = i;
            }
        }
        // Any fixed order of the kept tokens draws from the same distribution: vocabulary order, no sort per token.
        double draw = random.nextDouble() * total;
        for (int i = 0; i <= last; i++) {
            draw -= weights[i];
            if (weights[i] > 0 && draw <= 0) {
                return i;
            }
        }
        return last;
    }

    /**
     * The scores transformers' processors and warpers give these logits: float32 as torch computes them, removed
     * tokens at -inf; the next token is their argmax (greedy) or drawn from their softmax.
     */
    public float[] process(float[] logits, BitSet seen) {
        float[] scores = logits.clone();
        if (settings.repetitionPenalty() != 1) {
            float penalty = (float) settings.repetitionPenalty();
            for (int id = seen.nextSetBit(0); id >= 0 && id < scores.length; id = seen.nextSetBit(id + 1)) {
                scores[id] = scores[id] < 0 ? scores[id] * penalty : scores[id] / penalty;
            }
        }
        if (!settings.doSample()) {
            return scores;
        }
        if (settings.temperature() != 1) {
            float temperature = (float) settings.temperature();
            for (int i = 0; i < scores.length; i++) {
                scores[i] /= temperature;
            }
        }
        if (settings.topK() != 0 && settings.topK() < scores.length) {
            keepTopK(scores, settings.topK());
        }
        if (settings.topP() < 1) {
            keepTopP(scores, settings.topP());
        }
        if (settings.minP() > 0) {
            keepMinP(scores, settings.minP());
        }
        return scores;
    }

    /** TopKLogitsWarper: drop every score below the k-th largest (ties with it stay). */
    private static void keepTopK(float[] scores, int k) {
        float[] sorted = scores.clone();
        Arrays.sort(sorted);
        float kth = sorted[sorted.length - k];
        for (int i = 0; i < scores.length; i++) {
            if (scores[i] < kth) {
                scores[i] = Float.NEGATIVE_INFINITY;
            }
        }
    }

    /**
     * TopPLogitsWarper: from the least likely up, drop tokens while their summed probability stays at or below
     * 1 - topP; the most likely token always stays.
     */
    private static void keepTopP(float[] scores, double topP) {
        double[] probabilities = softmax(scores);
        int[] ascending = finiteAscending(scores); // removed tokens have probability 0: they change no sum
        double cumulative = 0;
        for (int r = 0; r < ascending.length - 1; r++) {
            cumulative += probabilities[ascending[r]];
            if (cumulative > 1 - topP) {
                break;
            }
            scores[ascending[r]] = Float.NEGATIVE_INFINITY;
        }
    }

    /**
     * The ids of the finite scores, from the lowest score up (equal scores by id), sorted as primitive longs (the
     * score's order-preserving bits above the id) rather than boxed ids: one sort per sampled token.
     */
    private static int[] finiteAscending(float[] scores) {
        long[] keys = new long[scores.length];
        int n = 0;
        for (int i = 0; i < scores.length; i++) {
            if (scores[i] != Float.NEGATIVE_INFINITY) {
                int bits = Float.floatToIntBits(scores[i]);
                long ordered = bits >= 0 ? bits : bits ^ Integer.MAX_VALUE; // as ints, in the floats' order
                keys[n++] = ordered << 32 | i;
            }
        }
        Arrays.sort(keys, 0, n);
        int[] ids = new int[n];
        for (int r = 0; r < n; r++) {
            ids[r] = (int) keys[r];
        }
        return ids;
    }

    /** MinPLogitsWarper: drop tokens less likely than minP times the most likely one. */
    private static void keepMinP(float[] scores, double minP) {
        double[] probabilities = softmax(scores);
        double top = Arrays.stream(probabilities).max().orElse(0);
        for (int i = 0; i < scores.length; i++) {
            if (probabilities[i] < minP * top) {
                scores[i] = Float.NEGATIVE_INFINITY;
            }
        }
    }

    private static double[] softmax(float[] scores) {
        double max = Double.NEGATIVE_INFINITY;
        for (float score : scores) {
            max = Math.max(max, score);
        }
        double[] probabilities = new double[scores.length];
        double total = 0;
        for (int i = 0; i < scores.length; i++) {
            probabilities[i] = Math.exp(scores[i] - max);
            total += probabilities[i];
        }
        for (int i = 0; i < scores.length; i++) {
            probabilities[i] /= total;
        }
        return probabilities;
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
