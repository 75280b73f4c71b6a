package io.mixtune.trainer.recipe;

import io.mixtune.merging.averaging.SwaAverager;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalLong;
import java.util.stream.Stream;

/**
 * The metrics each train.method's evaluation may log, eval_ left out (TRL's names): the one list that validate checks
 * train.metric_for_best_model against before a run starts, and that the training loop holds every evaluation's names
 * to (an assertion, so the tests of each method's evaluation keep this list and the objectives together).
 */
public final class EvaluationMetrics {
    private EvaluationMetrics() {}

    /** DpoMetrics.rewards: TRL's reward metrics of preference pairs (DPO, and ORPO and CPO without a reference). */
    private static final List<String> PAIR_REWARDS = List.of("rewards/chosen", "rewards/rejected",
            "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected");

    /**
     * Per method, after eval_loss: SftObjective.evaluate, DpoMetrics, KtoMetrics, OrpoMetrics (ORPO's log odds too),
     * RewardMetrics, DistillObjective.evaluate; grpo evaluates nothing. aux_loss: with the router term (SFT, DPO).
     */
    private static final Map<String, List<String>> BY_METHOD = Map.of(
            "sft", List.of("target_tokens", "perplexity", "entropy", "mean_token_accuracy", "aux_loss"),
            "dpo", concat(PAIR_REWARDS, "logits/chosen", "logits/rejected", "entropy", "mean_token_accuracy", "nll",
                    "aux_loss"),
            "kto", List.of("kl", "entropy", "logits/chosen", "logits/rejected", "rewards/chosen", "logps/chosen",
                    "rewards/rejected", "logps/rejected", "rewards/margins"),
            "orpo", concat(PAIR_REWARDS, "logits/rejected", "logits/chosen", "nll_loss", "log_odds_ratio",
                    "log_odds_chosen"),
            "cpo", concat(PAIR_REWARDS, "logits/rejected", "logits/chosen", "nll_loss"),
            "reward", List.of("min_reward", "mean_reward", "max_reward", "accuracy", "margin"),
            "distillation", List.of("completion_tokens", "entropy"),
            "grpo", List.of());

    private static List<String> concat(List<String> first, String... more) {
        return Stream.concat(first.stream(), Stream.of(more)).toList();
    }

    /**
     * What an evaluation of this recipe may log, eval_ left out: loss, the method's own, the loop's num_tokens (TRL's
     * eval_num_tokens), and each weight average's loss (loss_ema, loss_swa, loss_lawa) that averaging turns on. Empty
     * for grpo, which evaluates nothing.
     */
    public static List<String> of(Recipe.Train train, Recipe.Averaging averaging) {
        List<String> names = new ArrayList<>();
        if (train.readsPrompts()) {
            return names;
        }
        names.add("loss");
        for (String name : BY_METHOD.get(train.method())) {
            // no aux_loss without the router term: router_aux_loss off, or its coefficient 0
            if (!name.equals("aux_loss") || train.routerAuxLoss()
                    && (train.routerAuxLossCoef() == null || train.routerAuxLossCoef() > 0)) {
                names.add(name);
            }
        }
        names.add("num_tokens");
        if (averaging != null && averaging.emaDecay() != null) {
            names.add("loss_ema");
        }
        if (averaging != null && averaging.swaStart() != null) {
            names.add("loss_swa");
        }
        if (averaging != null && averaging.lawaK() > 0) {
            names.add("loss_lawa");
        }
        return names;
    }

    /**
     * Why train.metric_for_best_model cannot be read at a stage's first evaluation, or null where it can: eval_loss_swa
     * and eval_loss_lawa are logged from the first step their average holds a snapshot, and transformers'
     * Trainer._determine_best_metric raises KeyError at an evaluation without the metric, which would end the run
     * there; mixtune says so before the first step instead.
     *
     * @param firstEvaluation the stage step after which the stage first evaluates
     * @param evaluationCause the key that puts that evaluation there (e.g. "train.eval_every 2")
     * @param stageSteps the stage's length; empty where it is not known yet (validate without max_steps), so that a
     *     fractional swa_start is left to the run
     */
    public static String heldTooLate(Recipe.Train train, Recipe.Averaging averaging, long firstEvaluation,
            String evaluationCause, OptionalLong stageSteps) {
        String metric = train.bestModelMetric();
        long first;
        String average;
        String cause;
        if (metric.equals("eval_loss_swa") && averaging != null && averaging.swaStart() != null) {
            double start = averaging.swaStart();
            boolean fraction = start < 1;
            if (fraction && stageSteps.isEmpty()) {
                return null;
            }
            first = SwaAverager.Config.of(start, averaging.swaEvery(), stageSteps.orElse(0)).firstAveragedStep();
            average = "SWA";
            cause = "averaging.swa_start " + (fraction ? start + " of " + stageSteps.getAsLong() + " steps"
                    : String.valueOf((long) start));
        } else if (metric.equals("eval_loss_lawa") && averaging != null && averaging.lawaK() > 0) {
            first = averaging.lawaEvery();
            average = "LaWA";
            cause = "averaging.lawa_every " + first;
        } else {
            return null;
        }
        if (first <= firstEvaluation) {
            return null;
        }
        return String.format(Locale.ROOT, "%s is the loss of the %s average, which holds nothing before step %d (%s), "
                + "and the first evaluation comes after step %d (%s): transformers' Trainer would stop there (KeyError "
                + "in _determine_best_metric); start the average earlier, evaluate later, or choose another metric",
                metric, average, first, cause, firstEvaluation, evaluationCause);
    }

    /** Whether every eval_ name of an evaluation's record is one {@link #of} lists (the loop's assertion). */
    public static boolean lists(Recipe.Train train, Recipe.Averaging averaging, Iterable<String> recorded) {
        List<String> listed = of(train, averaging);
        for (String name : recorded) {
            if (name.startsWith("eval_") && !listed.contains(name.substring("eval_".length()))) {
                return false;
            }
        }
        return true;
    }
}
