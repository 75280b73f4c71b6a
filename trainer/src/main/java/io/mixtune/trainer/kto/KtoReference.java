package io.mixtune.trainer.kto;

import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import io.mixtune.trainer.dpo.DpoStep;
import io.mixtune.trainer.run.TrainingBatch;
import io.mixtune.trainer.run.TrainingModel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The frozen reference of a KTO run and its completion log-probs, computed once when the run starts (TRL's
 * precompute_ref_log_probs) for every training and validation example, of its own row and of its KL row, and kept in
 * the checkpoints so that a resumed run reads the same numbers. The reference is the base with the adapter off, or
 * model.adapter loaded a second time and frozen (TRL's ref_adapter_name). The policy's side of the KL estimate changes
 * with every step, so it is a pass now, without gradient and without dropout (TRL disables dropout).
 */
final class KtoReference {
    /** The frozen reference, when it is not the bare base: a second adapter beside the trained one. */
    static final String REFERENCE_ADAPTER = "reference";
    private static final List<String> NAMES = List.of("train", "train_kl", "validation", "validation_kl");

    private final TrainingModel model;
    private final boolean adapter;
    /** By name of {@link #NAMES}: log-probs by example index; a _kl entry is absent without KL rows. */
    private final Map<String, float[]> logProbs;

    private KtoReference(TrainingModel model, boolean adapter, Map<String, float[]> logProbs) {
        this.model = model;
        this.adapter = adapter;
        this.logProbs = logProbs;
    }

    /** The reference's log-probs of every example of both sets (each set in its micro-batches, in order). */
    static KtoReference compute(TrainingModel model, boolean adapter, List<KtoBatch> train, int trainSize,
            List<KtoBatch> validation, int validationSize) {
        KtoReference reference = new KtoReference(model, adapter, new LinkedHashMap<>());
        reference.fill("train", train, trainSize);
        reference.fill("validation", validation, validationSize);
        return reference;
    }

    private void fill(String set, List<KtoBatch> batches, int size) {
        float[] rows = new float[size];
        float[] klRows = batches.isEmpty() || batches.get(0).klRows() == null ? null : new float[size];
        for (KtoBatch batch : batches) {
            float[] values = pass(batch.rows());
            float[] klValues = klRows == null ? null : pass(batch.klRows());
            for (int i = 0; i < batch.size(); i++) {
                rows[batch.indices()[i]] = values[i];
                if (klRows != null) {
                    klRows[batch.indices()[i]] = klValues[i];
                }
            }
        }
        logProbs.put(set, rows);
        if (klRows != null) {
            logProbs.put(set + "_kl", klRows);
        }
    }

    /** A pass of the reference without dropout: the reference adapter in place of the trained one, or none. */
    private float[] pass(TrainingBatch rows) {
        LoraModel lora = model.lora();
        try (LoraModel.Scope evaluating = lora.evaluating();
                LoraModel.Scope reference = adapter ? lora.withActive(REFERENCE_ADAPTER)
                        : lora.withAdaptersDisabled()) {
            return DpoStep.sequenceLogProbs(model.model(), rows, model.manager());
        }
    }

    /**
     * What a micro-batch's loss reads: the reference's log-probs of its rows, and the KL estimate from the policy's
     * log-probs of its KL rows (a pass now) against the reference's.
     *
     * @param validation whether the batch is of the validation set
     */
    KtoStep.Against of(KtoBatch batch, boolean validation) {
        String set = validation ? "validation" : "train";
        float[] reference = at(logProbs.get(set), batch.indices());
        if (batch.klRows() == null) {
            return new KtoStep.Against(reference, 0);
        }
        float[] policyKl;
        try (LoraModel.Scope evaluating = model.lora().evaluating()) {
            policyKl = DpoStep.sequenceLogProbs(model.model(), batch.klRows(), model.manager());
        }
        return new KtoStep.Against(reference, KtoLoss.klEstimate(policyKl, at(logProbs.get(set + "_kl"),
                batch.indices())));
    }

    private static float[] at(float[] values, int[] indices) {
        float[] out = new float[indices.length];
        for (int i = 0; i < indices.length; i++) {
            out[i] = values[indices[i]];
        }
        return out;
    }

    /** Writes the log-probs into a checkpoint being saved. */
    void save(Path file) {
        List<TensorSpec> specs = new ArrayList<>();
        logProbs.forEach((name, values) -> specs.add(new TensorSpec(name, DType.F32, new long[] {values.length})));
        SafetensorsWriter.writeFile(file, specs, spec -> logProbs.get(spec.name()));
    }

    /** What {@link #save} wrote, bit for bit. */
    static KtoReference read(TrainingModel model, boolean adapter, Path file) {
        Map<String, float[]> logProbs = new LinkedHashMap<>();
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            for (String name : NAMES) {
                if (reader.contains(name)) {
                    logProbs.put(name, reader.readFloats(name));
                }
            }
        }
        if (!logProbs.containsKey("train")) {
            throw new IllegalArgumentException(file + " holds no KTO reference log-probs: the checkpoint was not "
                    + "written by a KTO run of this recipe");
        }
        return new KtoReference(model, adapter, logProbs);
    }
}
