package io.mixtune.trainer.dpo;

import ai.djl.ndarray.NDArray;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.model.safetensors.ArrayTensors;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.TrainingModel;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * A stage's frozen reference: the reference adapter or the bare base, and, when precomputed, its log-probs of the
 * stage's pairs and of the validation pairs.
 */
final class StageReference {
    /** The frozen reference, when it is not the bare base: a second adapter beside the trained one. */
    static final String REFERENCE_ADAPTER = "reference";

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
            return DpoStep.sequenceLogProbs(model.model(), batch, model.manager());
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
