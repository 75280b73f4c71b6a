package io.mixtune.trainer.recipe;

import io.mixtune.data.dataset.DataConfig;
import io.mixtune.model.config.ModelConfig;
import java.util.List;
import java.util.OptionalLong;

/**
 * What train.load_best_model_at_end, metric_for_best_model and early_stopping_patience ask of the other keys: an
 * evaluation to compare (validation data, a method that evaluates), and, to load the best checkpoint, a checkpoint at
 * every evaluation that may be the best (transformers' TrainingArguments.__post_init__ refuses the same cadences).
 */
final class BestModelChecks {
    private BestModelChecks() {}

    /**
     * @param model the model's config, or null where it cannot be read (its own check says why)
     * @param modelName the model as people name it (preset X, folder Y)
     */
    static void check(Recipe.Train train, DataConfig data, Recipe.Averaging averaging, ModelConfig model,
            String modelName, RecordBinder binder) {
        if (!train.tracksBestModel()) {
            return;
        }
        List<String> logged = EvaluationMetrics.of(train, averaging);
        String metric = train.bestModelMetric().substring("eval_".length());
        if (train.metricForBestModel() != null && !logged.isEmpty() && !logged.contains(metric)) {
            // transformers' KeyError comes at the first evaluation; the names are known before the run
            binder.problem("train.metric_for_best_model", train.metricForBestModel() + " is not a metric that train."
                    + "method " + train.method() + "'s evaluation logs" + RecordBinder.nearest(metric, logged)
                    + ": expected one of " + logged + " (eval_ may be put in front)");
        } else if (metric.equals("aux_loss") && model != null && !model.isMixtureOfExperts()) {
            binder.problem("train.metric_for_best_model", "aux_loss is a Mixtral router's load-balancing loss, and "
                    + modelName + " is a dense model without one: its evaluation logs no aux_loss; choose another "
                    + "metric");
        } else if (train.evalEvery() > 0 || train.maxSteps() != null) {
            // the first evaluation of the first stage: at eval_every, or at the end of a run of max_steps
            boolean atEvalEvery = train.evalEvery() > 0 && (train.maxSteps() == null
                    || train.evalEvery() <= train.maxSteps());
            String tooLate = EvaluationMetrics.heldTooLate(train, averaging,
                    atEvalEvery ? train.evalEvery() : train.maxSteps(),
                    atEvalEvery ? "train.eval_every " + train.evalEvery() : "train.max_steps " + train.maxSteps(),
                    train.maxSteps() == null ? OptionalLong.empty() : OptionalLong.of(train.maxSteps()));
            if (tooLate != null) {
                binder.problem("train.metric_for_best_model", tooLate);
            }
        }
        String key = train.loadBestModelAtEnd() ? "train.load_best_model_at_end"
                : train.earlyStoppingPatience() != null ? "train.early_stopping_patience" : "train.metric_for_best_model";
        if (train.readsPrompts()) {
            binder.problem(key, "compares evaluations, and train.method " + train.method() + " evaluates nothing (it "
                    + "has no validation set): drop it");
        } else if (data != null && data.validationFiles().isEmpty() && data.validationRatio() == 0) {
            binder.problem(key, "compares evaluations, and the run has no validation data: set data.validation_ratio "
                    + "or data.validation_files");
        }
        if (train.loadBestModelAtEnd()) {
            int eval = train.evalEvery();
            int save = train.saveEvery();
            // transformers: "--load_best_model_at_end requires the saving steps to be a multiple of the evaluation
            // steps"; mixtune's 0 means "at the end only", where both always happen
            if (eval == 0 && save > 0 || eval > 0 && (save == 0 || save % eval != 0)) {
                binder.conflict("train.save_every", "does not go with", "train.eval_every", "train."
                        + "load_best_model_at_end needs train.save_every a multiple of train.eval_every, so that "
                        + "every checkpoint is evaluated (as transformers' load_best_model_at_end requires); "
                        + "e.g. save_every " + (eval > 0 ? eval : save) + " and eval_every "
                        + (eval > 0 ? eval : save));
            }
        }
    }
}
