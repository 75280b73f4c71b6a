package io.mixtune.trainer.distill;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import io.mixtune.model.nn.Scalars;

/**
 * The generalized Jensen-Shannon divergence of the GKD paper (Agarwal et al. 2024, eq. 1) as TRL 1.13's
 * DistillationTrainer computes it per completion token (trl/trainer/distillation_trainer.py, {@code _chunk}): both
 * sides' logits divided by the temperature, log-softmaxed in float32; beta 0 is KL(teacher || student) (forward), 1
 * KL(student || teacher) (reverse), and between, with the mixture m = (1 - beta) student + beta teacher taken as a
 * log-sum-exp, beta KL(teacher || m) + (1 - beta) KL(student || m), each summed over the vocabulary. The caller reduces
 * the per-token sum (TRL: over the step's completion tokens, num_items_in_batch).
 */
public final class DistillLoss {
    private DistillLoss() {}

    /**
     * @param divergence the per-token divergences summed over the rows, a float32 scalar autograd differentiates
     *     through the student's logits
     * @param entropy the student's (temperature-scaled) per-token entropies summed, in nats, without gradient (what
     *     TRL logs as entropy, divided by the tokens)
     */
    public record Sums(NDArray divergence, double entropy) {}

    /**
     * @param studentLogits [tokens, vocab] float32, one row per completion token
     * @param teacherLogits [tokens, vocab] float32, the teacher's at the same positions, without gradient
     */
    public static Sums of(NDArray studentLogits, NDArray teacherLogits, double beta, double temperature) {
        NDArray student = temperature == 1.0 ? studentLogits : Scalars.dividedBy(studentLogits, temperature);
        NDArray teacher = temperature == 1.0 ? teacherLogits : Scalars.dividedBy(teacherLogits, temperature);
        NDArray s = student.logSoftmax(-1);
        NDArray t = teacher.logSoftmax(-1);
        NDArray perLogit;
        // F.kl_div(input, target, log_target=True) is exp(target) (target - input): TRL's argument order
        if (beta == 0.0) {
            perLogit = t.exp().mul(t.sub(s));
        } else if (beta == 1.0) {
            perLogit = s.exp().mul(s.sub(t));
        } else {
            // logsumexp([s + log(1 - beta), t + log(beta)]) elementwise, shifted by the larger of the two
            NDArray a = s.add((float) Math.log1p(-beta));
            NDArray b = t.add((float) Math.log(beta));
            NDArray larger = NDArrays.maximum(a, b).stopGradient();
            NDArray mixture = a.sub(larger).exp().add(b.sub(larger).exp()).log().add(larger);
            NDArray klTeacher = t.exp().mul(t.sub(mixture));
            NDArray klStudent = s.exp().mul(s.sub(mixture));
            perLogit = Scalars.times(klTeacher, beta).add(Scalars.times(klStudent, 1 - beta));
        }
        NDArray detached = s.stopGradient();
        double entropy = detached.exp().mul(detached).sum().neg().getFloat();
        return new Sums(perLogit.sum(), entropy);
    }
}
