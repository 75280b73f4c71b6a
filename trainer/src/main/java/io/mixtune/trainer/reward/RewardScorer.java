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

    /**
     * Each pair's rewards, its rows read as reward training reads them (prompt + chosen, prompt + rejected): the chosen
     * rows' rewards first, in pair order, then the rejected rows'.
     */
    public float[] pairRewards(List<PreferenceSample> pairs, int batchSize) {
        List<long[]> sequences = new ArrayList<>();
        for (PreferenceSample pair : pairs) {
            sequences.add(row(pair.promptIds(), pair.chosenIds()));
        }
        for (PreferenceSample pair : pairs) {
            sequences.add(row(pair.promptIds(), pair.rejectedIds()));
        }
        return rewards(sequences, batchSize);
    }

    /** A pair's row for one completion: the prompt's ids, then the completion's. */
    public static long[] row(long[] promptIds, long[] completionIds) {
        long[] out = Arrays.copyOf(promptIds, promptIds.length + completionIds.length);
        System.arraycopy(completionIds, 0, out, promptIds.length, completionIds.length);
        return out;
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
