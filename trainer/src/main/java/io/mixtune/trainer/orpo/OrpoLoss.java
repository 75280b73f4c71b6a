package io.mixtune.trainer.orpo;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.nn.Activation;
import io.mixtune.model.nn.Casts;
import io.mixtune.model.nn.Scalars;
import io.mixtune.trainer.dpo.DpoLoss;
import io.mixtune.trainer.recipe.Recipe;

/**
 * The reference-free preference objectives of a micro-batch as TRL 1.13's experimental trainers compute them from the
 * policy's log-probs of the chosen and rejected answers (per pair) and the NLL term: ORPO's (orpo_trainer.py,
 * odds_ratio_loss and get_batch_loss_metrics) and CPO's with its loss types, SimPO among them (cpo_trainer.py, cpo_loss
 * and get_batch_loss_metrics). Arrays float32 [pairs]; every constant goes through {@link Scalars} because autograd
 * differentiates through this.
 */
public final class OrpoLoss {
    private OrpoLoss() {}

    /**
     * The method of a run, ORPO or CPO, and what its settings decide about the log-probs it reads.
     *
     * @param orpo the orpo section, null for cpo
     * @param cpo the cpo section, null for orpo
     */
    public record Method(Recipe.Orpo orpo, Recipe.Cpo cpo) {
        public static Method of(Recipe recipe) {
            return recipe.train().method().equals("orpo") ? new Method(recipe.orpo(), null)
                    : new Method(null, recipe.cpo());
        }

        public boolean isOrpo() {
            return orpo != null;
        }

        public double beta() {
            return isOrpo() ? orpo.beta() : cpo.beta();
        }

        /** ORPO, ipo and simpo read each answer's log-prob averaged over its tokens, sigmoid and hinge the sum. */
        public boolean averagesLogProbs() {
            return isOrpo() || cpo.averagesLogProbs();
        }

        /**
         * ORPO's NLL is over every token of the chosen rows, the prompt's too (TRL's concatenated_forward takes the
         * input ids under the attention mask as labels); CPO's over the chosen answers' tokens only.
         */
        public boolean nllReadsPrompt() {
            return isOrpo();
        }

        /** The NLL term's weight: 1 in ORPO, cpo_alpha in CPO (0: no NLL, and TRL logs nll_loss 0). */
        public double nllWeight() {
            return isOrpo() ? 1 : cpo.cpoAlpha();
        }

        public String describe() {
            return isOrpo() ? "ORPO: beta (lambda) " + orpo.beta()
                    : "CPO: loss " + cpo.loss() + ", beta " + cpo.beta()
                            + (cpo.labelSmoothing() > 0 ? ", label smoothing " + cpo.labelSmoothing() : "")
                            + (cpo.loss().equals(Recipe.Cpo.SIMPO) ? ", simpo_gamma " + cpo.simpoGamma() : "")
                            + ", cpo_alpha " + cpo.cpoAlpha();
        }
    }

    /**
     * @param value the micro-batch's objective, the scalar to differentiate
     * @param logOdds ORPO's log odds ratio per pair (TRL's log_odds), null for CPO
     * @param logSigmoidOdds ORPO's log sigmoid(log odds) per pair (TRL's ratio), null for CPO
     */
    public record Objective(NDArray value, NDArray logOdds, NDArray logSigmoidOdds) {}

    /**
     * @param chosen the policy's log-prob of each chosen answer (averaged or summed as {@link
     *     Method#averagesLogProbs} says)
     * @param rejected the same of each rejected answer
     * @param nll the NLL term (a mean over its tokens), 0-dim or [1]
     */
    public static Objective objective(Method method, NDArray chosen, NDArray rejected, NDArray nll) {
        return method.isOrpo() ? orpo(method.orpo(), chosen, rejected, nll) : cpo(method.cpo(), chosen, rejected, nll);
    }

    /**
     * ORPO (paper eqs. 4 and 7 through log identities, as TRL): log odds = (c - r) - (log(1 - e^c) - log(1 - e^r)), the
     * loss nll - beta x mean(log sigmoid(log odds)). TRL computes log(1 - e^x) in float32 with two branches against
     * cancellation (log1mexp); here it is float64, where log(1 - e^x) loses nothing that float32 would keep.
     */
    static Objective orpo(Recipe.Orpo orpo, NDArray chosen, NDArray rejected, NDArray nll) {
        NDArray c = Casts.to(chosen, DataType.FLOAT64);
        NDArray r = Casts.to(rejected, DataType.FLOAT64);
        NDArray logOdds = c.sub(r).sub(log1mexp(c).sub(log1mexp(r)));
        NDArray ratio = Casts.to(DpoLoss.logSigmoid(logOdds), DataType.FLOAT32);
        NDArray value = nll.reshape(1).sub(Scalars.times(ratio, orpo.beta()).mean().reshape(1)).reshape(1);
        return new Objective(value, Casts.to(logOdds, DataType.FLOAT32), ratio);
    }

    /** log(1 - e^x) for x < 0. */
    private static NDArray log1mexp(NDArray x) {
        return x.exp().neg().add(1).log();
    }

    /**
     * CPO's losses on d = c - r (SimPO: d - gamma / beta): sigmoid and simpo -(1 - eps) log sigmoid(beta d) - eps log
     * sigmoid(-beta d), hinge relu(1 - beta d), ipo (d - 1 / (2 beta))^2; the objective their mean over pairs plus
     * cpo_alpha x the NLL.
     */
    static Objective cpo(Recipe.Cpo cpo, NDArray chosen, NDArray rejected, NDArray nll) {
        double beta = cpo.beta();
        NDArray logits = chosen.sub(rejected);
        if (cpo.loss().equals(Recipe.Cpo.SIMPO)) {
            logits = logits.sub(cpo.simpoGamma() / beta);
        }
        double eps = cpo.labelSmoothing();
        NDArray losses = switch (cpo.loss()) {
            case Recipe.Cpo.SIGMOID, Recipe.Cpo.SIMPO -> {
                NDArray scaled = Scalars.times(logits, beta);
                NDArray clean = Scalars.times(DpoLoss.logSigmoid(scaled), -(1 - eps));
                yield eps == 0 ? clean : clean.sub(Scalars.times(DpoLoss.logSigmoid(scaled.neg()), eps));
            }
            case Recipe.Cpo.HINGE -> Activation.relu(Scalars.times(logits, -beta).add(1));
            case Recipe.Cpo.IPO -> logits.sub(1 / (2 * beta)).square();
            default -> throw new IllegalArgumentException("cpo.loss " + cpo.loss());
        };
        NDArray value = losses.mean().reshape(1);
        if (cpo.cpoAlpha() != 0) {
            value = value.add(Scalars.times(nll.reshape(1), cpo.cpoAlpha()));
        }
        return new Objective(value, null, null);
    }
}
