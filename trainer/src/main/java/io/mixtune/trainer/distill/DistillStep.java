package io.mixtune.trainer.distill;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Casts;
import io.mixtune.model.nn.Scalars;
import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.DecoderBackward;
import io.mixtune.trainer.run.TrainingBatch;

/**
 * One micro-batch of distillation, as TRL 1.13's DistillationTrainer._compute_loss: the student's and the teacher's
 * final hidden states at the positions that predict completion tokens, projected to logits a chunk of positions at a
 * time (float32, as TRL's {@code .float()}), and the generalized JSD of each position ({@link DistillLoss}) summed. The
 * teacher's pass runs first, without autograd, and only its [completion tokens, hidden] states are kept, freed with the
 * micro-batch; its logits exist a chunk at a time. A Mixtral student adds no load-balancing term (TRL's loss is the
 * divergence alone).
 */
public final class DistillStep {
    private DistillStep() {}

    /**
     * What a micro-batch measured.
     *
     * @param divergenceSum the per-token divergences summed over its completion tokens
     * @param entropySum the student's per-token entropies summed (TRL's entropy numerator)
     * @param tokens its completion tokens
     */
    public record Values(double divergenceSum, double entropySum, int tokens) {}

    /**
     * Forward and backward of divergenceSum / divisor, accumulating into the student's trainable arrays' gradients;
     * with {@code checkpointing} layer by layer.
     */
    public static Values backward(CausalLm student, DistillTeacher teacher, TrainingBatch batch, double beta,
            double temperature, double divisor, boolean checkpointing, long dropoutSeed, NDManager manager) {
        try (NDManager teacherManager = manager.newSubManager()) {
            NDArray teacherStates = batch.targetCount() == 0 ? null : teacher.predictingStates(batch, teacherManager);
            double[] measured = new double[2];
            DecoderBackward.run(student, batch, (states, headManager) -> {
                DistillLoss.Sums sums = sums(student, states, teacher, teacherStates, batch, beta, temperature,
                        headManager);
                measured[0] = sums.divergence().getFloat();
                measured[1] = sums.entropy();
                return Scalars.dividedBy(sums.divergence(), divisor);
            }, 0, checkpointing, dropoutSeed, manager);
            return new Values(measured[0], measured[1], batch.targetCount());
        }
    }

    /** The same sums without backward (evaluation): the caller holds autograd off. */
    static Values measure(CausalLm student, DistillTeacher teacher, TrainingBatch batch, double beta,
            double temperature, NDManager manager) {
        try (NDManager pass = manager.newSubManager()) {
            NDArray teacherStates = batch.targetCount() == 0 ? null : teacher.predictingStates(batch, pass);
            CausalLmLoss.Forward forward = CausalLmLoss.forward(student, batch, pass, java.util.OptionalLong.empty());
            DistillLoss.Sums sums = sums(student, forward.states(), teacher, teacherStates, batch, beta, temperature,
                    pass);
            return new Values(sums.divergence().getFloat(), sums.entropy(), batch.targetCount());
        }
    }

    /**
     * The divergence (differentiable in the student's states) and the entropy over the batch's completion tokens.
     *
     * @param studentStates the student's final hidden states [B, T, hidden]
     * @param teacherStates the teacher's at the predicting positions [targets, hidden], or null without targets
     */
    public static DistillLoss.Sums sums(CausalLm student, NDArray studentStates, DistillTeacher teacher,
            NDArray teacherStates, TrainingBatch batch, double beta, double temperature, NDManager manager) {
        int targets = batch.targetCount();
        if (targets == 0) {
            // tied to the graph, so that backward still runs
            return new DistillLoss.Sums(Casts.to(Scalars.times(studentStates.sum(), 0), DataType.FLOAT32), 0);
        }
        NDArray predicting = CausalLmLoss.predictingStates(studentStates, batch, manager);
        int chunkRows = CausalLmLoss.logitsChunkRows(student.config());
        NDList divergences = new NDList();
        double entropy = 0;
        for (int start = 0; start < targets; start += chunkRows) {
            NDIndex rows = new NDIndex("{}:{}", start, Math.min(targets, start + chunkRows));
            NDArray studentLogits = Casts.to(student.logits(predicting.get(rows)), DataType.FLOAT32);
            NDArray teacherLogits = teacher.logits(teacherStates.get(rows));
            DistillLoss.Sums chunk = DistillLoss.of(studentLogits, teacherLogits, beta, temperature);
            divergences.add(chunk.divergence());
            entropy += chunk.entropy();
        }
        NDArray divergence = divergences.size() == 1 ? divergences.get(0) : NDArrays.stack(divergences).sum();
        return new DistillLoss.Sums(divergence, entropy);
    }
}
