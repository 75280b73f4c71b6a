package io.mixtune.merging;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.AttentionMask;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.RotaryEmbedding;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.function.Function;

/**
 * The router rows of a mixture, one [experts, hidden] matrix per layer, by mergekit-moe's gate modes
 * (mergekit/moe/router.py get_gate_params). For the prompt modes each expert's row is the positive prompts' vector
 * minus the negative prompts', divided by its L2 norm (clamped at 1e-8), so a token is routed by the cosine of its
 * hidden state with each expert's prompts.
 */
final class MoeGates {
    private static final double NORM_FLOOR = 1e-8;

    private MoeGates() {}

    /** Row-major [layers][experts * hidden]. */
    record Rows(float[][] perLayer) {}

    /**
     * Standard normal entries (mergekit's {@code torch.randn((layers, experts, hidden))}) or, uniform,
     * U(-1/sqrt(hidden), 1/sqrt(hidden)) (torch.nn.Linear's kaiming_uniform with a=sqrt(5) reduces to that bound).
     * Drawn from a SplittableRandom seeded by {@code seed}, in [layer][expert][hidden] order: the same seed gives the
     * same rows on every machine, but not torch's values (torch's Mersenne Twister and its own normal sampler).
     */
    static Rows random(int layers, int experts, int hidden, long seed, boolean uniform) {
        SplittableRandom random = new SplittableRandom(seed);
        double bound = Math.sqrt(1.0 / hidden);
        float[][] rows = new float[layers][experts * hidden];
        for (float[] layer : rows) {
            for (int i = 0; i < layer.length; i++) {
                layer[i] = (float) (uniform ? random.nextDouble() * 2 * bound - bound : random.nextGaussian());
            }
        }
        return new Rows(rows);
    }

    /**
     * cheap_embed (router.py get_cheap_embedding): the sum of the embedding rows of every token of every prompt (BOS
     * included, padding not), divided by its norm; the same vector for every layer.
     *
     * @param embed [vocab, hidden] row-major
     */
    static Rows cheapEmbed(List<MoeConfig.Expert> experts, float[] embed, int layers, int hidden,
            Function<String, long[]> tokens) {
        Function<List<String>, double[][]> side = prompts -> {
            double[] sum = new double[hidden];
            for (String prompt : prompts) {
                for (long id : tokens.apply(prompt)) {
                    for (int k = 0; k < hidden; k++) {
                        sum[k] += embed[Math.toIntExact(id * hidden + k)];
                    }
                }
            }
            normalise(sum);
            double[][] perLayer = new double[layers][];
            java.util.Arrays.fill(perLayer, sum);
            return perLayer;
        };
        return promptRows(experts, layers, hidden, side);
    }

    /**
     * hidden (router.py get_hidden_states with average=False): per layer, the base's hidden state entering that layer
     * (the embeddings for layer 0: transformers' hidden_states[:-1]) at each prompt's last token, averaged over the
     * prompts. Each prompt runs alone, unpadded: mergekit pads the batch on the left, which under RoPE (relative
     * positions) and the padding mask changes nothing but rounding. Computed in float32 (mergekit: bfloat16).
     */
    static Rows hidden(List<MoeConfig.Expert> experts, Path model, Device device, Function<String, long[]> tokens) {
        try (NDManager manager = NDManager.newBaseManager(device);
                CausalLm lm = MistralCheckpoint.load(model, manager)) {
            ModelConfig config = lm.config();
            int layers = config.numHiddenLayers();
            int hidden = config.hiddenSize();
            Function<List<String>, double[][]> side = prompts -> {
                double[][] mean = new double[layers][hidden];
                for (String prompt : prompts) {
                    long[] ids = tokens.apply(prompt);
                    float[][] states = lastTokenStates(lm, ids);
                    for (int l = 0; l < layers; l++) {
                        for (int k = 0; k < hidden; k++) {
                            mean[l][k] += states[l][k] / prompts.size();
                        }
                    }
                }
                return mean;
            };
            return promptRows(experts, layers, hidden, side);
        }
    }

    /** [layers][hidden]: the residual stream entering each decoder layer at the last position of {@code ids}. */
    private static float[][] lastTokenStates(CausalLm lm, long[] ids) {
        int layers = lm.layerCount();
        int length = ids.length;
        float[][] states = new float[layers][];
        try (NDManager step = lm.manager().newSubManager()) {
            NDArray inputIds = step.create(ids, new Shape(1, length));
            NDArray positions = step.arange(0, length, 1, DataType.INT64).reshape(1, length);
            NDArray mask = AttentionMask.forRows(step, 1, length, null, null, lm.config().slidingWindow(),
                    lm.computeType());
            RotaryEmbedding.Angles angles = lm.anglesAt(positions);
            NDArray h = lm.embed(inputIds);
            for (int l = 0; l < layers; l++) {
                states[l] = h.get(0, length - 1).toType(DataType.FLOAT32, false).toFloatArray();
                if (l + 1 < layers) {
                    h = lm.layer(l, h, angles, mask).hidden();
                }
            }
        }
        return states;
    }

    /** Each expert's rows: positive side minus negative side (when given), each layer's row divided by its norm. */
    private static Rows promptRows(List<MoeConfig.Expert> experts, int layers, int hidden,
            Function<List<String>, double[][]> side) {
        float[][] rows = new float[layers][experts.size() * hidden];
        for (int e = 0; e < experts.size(); e++) {
            MoeConfig.Expert expert = experts.get(e);
            double[][] positive = side.apply(expert.positivePrompts());
            double[][] negative = expert.negativePrompts().isEmpty() ? null : side.apply(expert.negativePrompts());
            for (int l = 0; l < layers; l++) {
                double[] row = positive[l].clone();
                if (negative != null) {
                    for (int k = 0; k < hidden; k++) {
                        row[k] -= negative[l][k];
                    }
                }
                normalise(row);
                for (int k = 0; k < hidden; k++) {
                    rows[l][e * hidden + k] = (float) row[k];
                }
            }
        }
        return new Rows(rows);
    }

    /** mergekit's threshold on a layer's router condition number (router.py warn_degenerate_gates). */
    static final double DEGENERATE_CONDITION = 5.0;

    /**
     * The layers whose [experts, hidden] router has a 2-norm condition number (largest over smallest singular value,
     * torch.linalg.cond's) above {@value #DEGENERATE_CONDITION}: rows so alike that some expert is rarely chosen.
     */
    static List<Integer> degenerateLayers(Rows rows, int experts) {
        List<Integer> layers = new ArrayList<>();
        for (int l = 0; l < rows.perLayer().length; l++) {
            float[] layer = rows.perLayer()[l];
            int hidden = layer.length / experts;
            double[][] matrix = new double[experts][hidden];
            for (int e = 0; e < experts; e++) {
                for (int k = 0; k < hidden; k++) {
                    matrix[e][k] = layer[e * hidden + k];
                }
            }
            double[] singular = new org.apache.commons.math3.linear.SingularValueDecomposition(
                    org.apache.commons.math3.linear.MatrixUtils.createRealMatrix(matrix)).getSingularValues();
            double smallest = singular[Math.min(experts, hidden) - 1];
            if (!(singular[0] / smallest <= DEGENERATE_CONDITION)) {
                layers.add(l);
            }
        }
        return layers;
    }

    private static void normalise(double[] v) {
        double sum = 0;
        for (double x : v) {
            sum += x * x;
        }
        double norm = Math.max(Math.sqrt(sum), NORM_FLOOR);
        for (int k = 0; k < v.length; k++) {
            v[k] /= norm;
        }
    }

    /**
     * A prompt's ids as mergekit-moe tokenizes it (router.py tokenize_prompts): {@code tokenizer.bos_token + prompt}
     * without added special tokens, so the special tokens written in a prompt ({@code <|im_start|>}) are control
     * tokens; BOS by id, which tokenizes as the BOS text does.
     */
    static Function<String, long[]> promptTokens(TextTokenizer tokenizer, Integer bosId) {
        return prompt -> {
            long[] text = tokenizer.encode(tokenizer.control(prompt), false);
            if (bosId == null) {
                return text;
            }
            List<Long> ids = new ArrayList<>(text.length + 1);
            ids.add((long) bosId);
            for (long id : text) {
                ids.add(id);
            }
            return ids.stream().mapToLong(Long::longValue).toArray();
        };
    }
}
