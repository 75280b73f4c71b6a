package io.mixtune.trainer.dpo;

import ai.djl.ndarray.NDArray;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.model.safetensors.ArrayTensors;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.TrainingModel;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;

/**
 * A stage's frozen reference: the reference adapter or the bare base, and, when precomputed, its log-probs of the
 * stage's pairs and of the validation pairs.
 */
final class StageReference {
    /** The frozen reference, when it is not the bare base: a second adapter beside the trained one. */
    static final String REFERENCE_ADAPTER = "reference";
    /** The ld_alpha the kept log-probs were summed with; absent where they were not LD-DPO's (and in older files). */
    static final String LD_ALPHA = "ld_alpha";

    private final Recipe.Dpo dpo;
    private final TrainingModel model;
    private final boolean adapter;
    final ReferenceLogProbs train;
    final ReferenceLogProbs validation;

    StageReference(Recipe.Dpo dpo, TrainingModel model, boolean adapter, ReferenceLogProbs train,
            ReferenceLogProbs validation) {
        this.dpo = dpo;
        this.model = model;
        this.adapter = adapter;
        this.train = train;
        this.validation = validation;
    }

    StageReference withLogProbs(ReferenceLogProbs train, ReferenceLogProbs validation) {
        return new StageReference(dpo, model, adapter, train, validation);
    }

    /** The reference's log-probs of a batch's rows: zeros without a reference, else precomputed or computed now. */
    float[] of(PreferenceBatch batch, ReferenceLogProbs precomputed) {
        if (dpo.referenceFree()) {
            return new float[2 * batch.pairs()];
        }
        return precomputed != null ? precomputed.of(batch) : pass(batch);
    }

    /**
     * A forward pass of the reference, without dropout (it is a frozen model): the trained adapter swapped for the
     * reference adapter, or all adapters off, for the pass only.
     */
    float[] pass(PreferenceBatch batch) {
        LoraModel lora = model.lora();
        try (LoraModel.Scope evaluating = lora.evaluating();
                LoraModel.Scope reference = adapter ? lora.withActive(REFERENCE_ADAPTER)
                        : lora.withAdaptersDisabled()) {
            return DpoStep.sequenceLogProbs(model.model(), batch, dpo.ldAlpha(), model.manager());
        }
    }

    /**
     * Refuses log-probs kept at another ld_alpha than the recipe's (a file without the marker holds plain sums, the
     * recipe's without ld_alpha): they would mix two length weightings in one stage.
     */
    static void checkLdAlpha(Recipe.Dpo dpo, SafetensorsReader reader, Path file) {
        Float kept = reader.contains(LD_ALPHA) ? reader.readFloats(LD_ALPHA)[0] : null;
        Float wanted = dpo.ldAlpha() == null ? null : dpo.ldAlpha().floatValue();
        boolean keptLogProbs = reader.contains("train.chosen") || reader.contains("validation.chosen");
        if (keptLogProbs && !Objects.equals(kept, wanted)) {
            throw new IllegalArgumentException(file + " holds the reference log-probs summed with "
                    + (kept == null ? "no ld_alpha" : "ld_alpha " + kept) + ", the recipe has dpo.ld_alpha "
                    + (wanted == null ? "null" : wanted) + ": resume with the ld_alpha the run started with");
        }
    }

    /** Writes what a resumed run needs to go on with this reference, exactly. */
    void save(Path file) {
        List<TensorSpec> specs = new ArrayList<>();
        Map<String, NDArray> referenceArrays = new TreeMap<>();
        Map<String, float[]> logProbs = new TreeMap<>();
        if (adapter && !dpo.referenceFree()) {
            List<NDArray> arrays = model.lora().parameters(REFERENCE_ADAPTER);
            for (int i = 0; i < arrays.size(); i++) {
                specs.add(new TensorSpec("reference." + i, DType.F32, arrays.get(i).getShape().getShape()));
                referenceArrays.put("reference." + i, arrays.get(i));
            }
        }
        if (train != null) {
            train.put("train", specs, logProbs);
        }
        if (validation != null) {
            validation.put("validation", specs, logProbs);
        }
        if (dpo.ldAlpha() != null && !logProbs.isEmpty()) {
            // The log-probs are LD-DPO's mix at this ld_alpha: a resumed run reads them only at the same one.
            specs.add(new TensorSpec(LD_ALPHA, DType.F32, new long[] {1}));
            logProbs.put(LD_ALPHA, new float[] {dpo.ldAlpha().floatValue()});
        }
        if (specs.isEmpty()) {
            return;
        }
        // The reference adapter straight from its arrays' memory, the log-probs (already on the host) as they are.
        try (ArrayTensors reference = new ArrayTensors(referenceArrays)) {
            SafetensorsWriter.writeFile(file, specs, new SafetensorsWriter.TensorSource() {
                @Override
                public ByteBuffer bytes(TensorSpec spec) {
                    return logProbs.containsKey(spec.name()) ? null : reference.bytes(spec);
                }

                @Override
                public float[] floats(TensorSpec spec) {
                    return logProbs.containsKey(spec.name()) ? logProbs.get(spec.name()) : reference.floats(spec);
                }
            });
        }
    }
}
