package io.mixtune.trainer.reward;

import ai.djl.Device;
import ai.djl.ndarray.NDManager;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.TrainingBatch;
import io.mixtune.trainer.run.TrainingModel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.OptionalLong;
import java.util.stream.IntStream;

/**
 * A trained reward model scoring token sequences: the base with a reward adapter (LoRA + score head) loaded, each
 * sequence's reward read as in training (right padded with EOS, at the last non-pad token), without dropout.
 */
public final class RewardScorer implements AutoCloseable {
    private final NDManager manager;
    private final CausalLm model;
    private final LoraModel lora;
    private final long padId;

    private RewardScorer(NDManager manager, CausalLm model, LoraModel lora) {
        this.manager = manager;
        this.model = model;
        this.lora = lora;
        this.padId = model.config().eosTokenId();
    }

    /**
     * Loads {@code modelDir} with the reward adapter {@code adapterDir}; a causal LM's adapter, or a head that does not
     * fit the model, is refused (IllegalArgumentException naming the file).
     */
    public static RewardScorer load(Path modelDir, Path adapterDir, MistralCheckpoint.LinearFactory linears,
            Device device) {
        NDManager manager = NDManager.newBaseManager(device);
        try {
            CausalLm model = MistralCheckpoint.load(modelDir, manager, linears);
            LoraModel lora = new LoraModel(model);
            PeftAdapter.load(lora, adapterDir, TrainingModel.ADAPTER_NAME, RewardHead.modulesToSave(model.config()));
            lora.setTraining(false);
            return new RewardScorer(manager, model, lora);
        } catch (RuntimeException e) {
            manager.close();
            throw e;
        }
    }

    /** Sequences per forward pass unless told otherwise: mixtune reward's default, and WARM's report's. */
    public static final int DEFAULT_BATCH_SIZE = 8;

    /** The rewards of each pair's chosen and rejected answer (each after its prompt). */
    public record PairScores(float[] chosen, float[] rejected) {
        public float margin(int pair) {
            return chosen[pair] - rejected[pair];
        }

        /** The share of pairs whose chosen answer scores above its rejected one. */
        public double accuracy() {
            return (double) IntStream.range(0, chosen.length).filter(i -> margin(i) > 0).count() / chosen.length;
        }

        public double meanMargin() {
            double sum = 0;
            for (int i = 0; i < chosen.length; i++) {
                sum += margin(i);
            }
            return sum / chosen.length;
        }
    }

    /** Every pair's rewards: the chosen sequences, then the rejected ones, {@code batchSize} per forward pass. */
    public PairScores pairs(List<PreferenceSample> pairs, int batchSize) {
        List<long[]> sequences = new ArrayList<>();
        pairs.forEach(pair -> sequences.add(concat(pair.promptIds(), pair.chosenIds())));
        pairs.forEach(pair -> sequences.add(concat(pair.promptIds(), pair.rejectedIds())));
        float[] rewards = rewards(sequences, batchSize);
        return new PairScores(Arrays.copyOfRange(rewards, 0, pairs.size()),
                Arrays.copyOfRange(rewards, pairs.size(), rewards.length));
    }

    /** A pair's prompt and one of its answers, as one sequence. */
    public static long[] concat(long[] prompt, long[] answer) {
        long[] out = Arrays.copyOf(prompt, prompt.length + answer.length);
        System.arraycopy(answer, 0, out, prompt.length, answer.length);
        return out;
    }

    /** The reward of each sequence, {@code batchSize} sequences per forward pass. */
    public float[] rewards(List<long[]> sequences, int batchSize) {
        float[] rewards = new float[sequences.size()];
        for (int from = 0; from < sequences.size(); from += batchSize) {
            List<long[]> rows = sequences.subList(from, Math.min(sequences.size(), from + batchSize));
            TrainingBatch batch = padded(rows);
            try (NDManager pass = manager.newSubManager()) {
                CausalLmLoss.Forward forward = CausalLmLoss.forward(model, batch, pass, OptionalLong.empty());
                float[] scores = RewardHead.rewards(forward.states(), RewardHead.lastNonPadTokens(batch.inputIds(),
                        padId), lora.modulesToSave(TrainingModel.ADAPTER_NAME).get(RewardHead.MODULE), pass)
                        .toFloatArray();
                System.arraycopy(scores, 0, rewards, from, scores.length);
            }
        }
        return rewards;
    }

    /** Rows right-padded with the pad id (EOS), positions from 0, padding masked: the training layout. */
    private TrainingBatch padded(List<long[]> rows) {
        int length = rows.stream().mapToInt(r -> r.length).max().orElse(1);
        long[][] ids = new long[rows.size()][length];
        long[][] labels = new long[rows.size()][length];
        long[][] positions = new long[rows.size()][length];
        long[][] mask = new long[rows.size()][length];
        for (int r = 0; r < rows.size(); r++) {
            Arrays.fill(ids[r], padId);
            Arrays.fill(labels[r], TokenizedSample.IGNORE);
            long[] row = rows.get(r);
            for (int t = 0; t < length; t++) {
                positions[r][t] = t;
                if (t < row.length) {
                    ids[r][t] = row[t];
                    mask[r][t] = 1;
                }
            }
        }
        return new TrainingBatch(ids, labels, positions, null, mask);
    }

    @Override
    public void close() {
        model.close();
        manager.close();
    }
}
