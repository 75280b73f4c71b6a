package io.mixtune.trainer.dpo;

import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.util.List;
import java.util.Map;
import java.util.function.Function;

/**
 * The reference's summed completion log-probs of a set of pairs (a stage's training pairs, or the validation pairs),
 * by pair index. The reference is frozen for a whole stage, so they are computed once when the stage starts (TRL's
 * precompute_ref_log_probs) and kept in the stage's checkpoints, instead of a second forward pass in every step.
 */
final class ReferenceLogProbs {
    private final float[] chosen;
    private final float[] rejected;

    private ReferenceLogProbs(float[] chosen, float[] rejected) {
        this.chosen = chosen;
        this.rejected = rejected;
    }

    /**
     * @param batches micro-batches covering every pair once
     * @param pass the reference's sequence log-probs of a batch's rows, chosen rows then rejected rows
     */
    static ReferenceLogProbs compute(List<PreferenceBatch> batches, int pairs,
            Function<PreferenceBatch, float[]> pass) {
        float[] chosen = new float[pairs];
        float[] rejected = new float[pairs];
        for (PreferenceBatch batch : batches) {
            float[] rows = pass.apply(batch);
            for (int i = 0; i < batch.pairs(); i++) {
                chosen[batch.indices()[i]] = rows[i];
                rejected[batch.indices()[i]] = rows[batch.pairs() + i];
            }
        }
        return new ReferenceLogProbs(chosen, rejected);
    }

    /** The batch's rows as {@link DpoStep} takes them: chosen rows then rejected rows. */
    float[] of(PreferenceBatch batch) {
        float[] rows = new float[2 * batch.pairs()];
        for (int i = 0; i < batch.pairs(); i++) {
            rows[i] = chosen[batch.indices()[i]];
            rows[batch.pairs() + i] = rejected[batch.indices()[i]];
        }
        return rows;
    }

    /** Adds the values to a safetensors file being written, as {@code name.chosen} and {@code name.rejected}. */
    void put(String name, List<TensorSpec> specs, Map<String, float[]> data) {
        specs.add(new TensorSpec(name + ".chosen", DType.F32, new long[] {chosen.length}));
        specs.add(new TensorSpec(name + ".rejected", DType.F32, new long[] {rejected.length}));
        data.put(name + ".chosen", chosen);
        data.put(name + ".rejected", rejected);
    }

    /** What {@link #put} wrote, or null when the file holds none under that name. */
    static ReferenceLogProbs read(SafetensorsReader reader, String name) {
        if (!reader.contains(name + ".chosen")) {
            return null;
        }
        return new ReferenceLogProbs(reader.readFloats(name + ".chosen"), reader.readFloats(name + ".rejected"));
    }
}
