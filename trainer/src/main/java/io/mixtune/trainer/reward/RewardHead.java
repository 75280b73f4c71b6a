package io.mixtune.trainer.reward;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.nn.Casts;
import java.util.Map;
import java.util.Random;

/**
 * A reward model's head as transformers' MistralForSequenceClassification / MixtralForSequenceClassification with
 * num_labels 1 builds it: {@code score}, a Linear(hidden, 1) without bias on the final normed hidden states, read at
 * each sequence's last token that is not padding. Trained in full beside the LoRA adapter (PEFT's modules_to_save).
 */
public final class RewardHead {
    /** The module's name in transformers and in the adapter file (base_model.model.score.weight). */
    public static final String MODULE = PeftAdapter.SCORE_HEAD;
    /**
     * transformers' initializer_range, the std of its normal init of a Linear: MistralConfig's and MixtralConfig's
     * default, which Mistral's and Mixtral's published configs keep.
     */
    public static final double INITIALIZER_RANGE = 0.02;

    private RewardHead() {}

    /** The weight's shape, [1, hidden]. */
    public static long[] shape(ModelConfig config) {
        return new long[] {1, config.hiddenSize()};
    }

    /** What a reward adapter holds besides LoRA, for PeftAdapter.load: the score head and its shape. */
    public static Map<String, long[]> modulesToSave(ModelConfig config) {
        return Map.of(MODULE, shape(config));
    }

    /** A fresh head as transformers initialises it, normal(0, initializer_range), drawn from {@code seed}. */
    public static NDArray initial(ModelConfig config, long seed, NDManager manager) {
        Random random = new Random(seed * 1_000_003L + 0x5C0E);
        float[] weight = new float[config.hiddenSize()];
        for (int i = 0; i < weight.length; i++) {
            weight[i] = (float) (random.nextGaussian() * INITIALIZER_RANGE);
        }
        return manager.create(weight, new Shape(shape(config)));
    }

    /**
     * The position whose state each row's reward reads, as transformers picks it: the last position whose id is not
     * the pad id (argmax of index x (id != pad); 0 for a row of padding only). mixtune pads with EOS, as TRL does
     * without a pad token, so an answer's closing EOS is not read: its reward sits on the token before.
     */
    public static long[] lastNonPadTokens(long[][] inputIds, long padId) {
        long[] positions = new long[inputIds.length];
        for (int row = 0; row < inputIds.length; row++) {
            for (int t = inputIds[row].length - 1; t >= 0; t--) {
                if (inputIds[row][t] != padId) {
                    positions[row] = t;
                    break;
                }
            }
        }
        return positions;
    }

    /**
     * The rewards [rows], float32: score applied to the final hidden states [rows, T, hidden] at {@code positions}.
     */
    public static NDArray rewards(NDArray states, long[] positions, NDArray weight, NDManager manager) {
        long rows = states.getShape().get(0);
        long length = states.getShape().get(1);
        long[] flat = new long[positions.length];
        for (int row = 0; row < flat.length; row++) {
            flat[row] = row * length + positions[row];
        }
        NDArray read = states.reshape(rows * length, -1).get(new NDIndex("{}", manager.create(flat)));
        return Casts.to(read, DataType.FLOAT32).matMul(weight.transpose()).reshape(-1);
    }
}
