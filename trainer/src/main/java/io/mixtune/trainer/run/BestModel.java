package io.mixtune.trainer.run;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.trainer.Refusal;
import io.mixtune.trainer.recipe.Recipe;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;

/**
 * The best checkpoint and early stopping of a stage (train.metric_for_best_model, load_best_model_at_end,
 * early_stopping_patience), as transformers' Trainer keeps them in its TrainerState (best_metric, best_global_step,
 * best_model_checkpoint) and EarlyStoppingCallback in its early_stopping_patience_counter. Saved in every
 * checkpoint's trainer_state.json, so a resumed run compares, keeps and stops as the uninterrupted one.
 *
 * <p>A Stage-DPO stage is a Trainer run of its own (a fresh optimizer, schedule and reference): its evaluations are
 * compared among themselves, never with another stage's, whose eval_loss is against another reference.
 */
final class BestModel {
    private final String metric;
    private final boolean greaterIsBetter;
    private final Integer patience;
    private final double threshold;
    private final boolean loadBest;
    private State state = State.NONE;

    /**
     * What a checkpoint records.
     *
     * @param bestMetric the best value so far; null before the first evaluation, then (as transformers) -inf or +inf
     *     until a value beats it
     * @param bestGlobalStep the step that evaluated to it; 0 for none
     * @param bestCheckpointStep the step of the best checkpoint kept (transformers' best_model_checkpoint): the best
     *     step once a scheduled save wrote it; 0 for none
     * @param patienceCounter evaluations in a row that did not improve on the best by more than the threshold
     * @param shouldTrainingStop early stopping ended the stage at the checkpoint's step
     */
    record State(Double bestMetric, long bestGlobalStep, long bestCheckpointStep, int patienceCounter,
            boolean shouldTrainingStop) {
        static final State NONE = new State(null, 0, 0, 0, false);

        /** Into trainer_state.json under transformers' names. */
        void writeInto(ObjectNode json, Path checkpoints) {
            if (bestMetric == null) {
                json.putNull("best_metric");
            } else if (Double.isFinite(bestMetric)) {
                json.put("best_metric", bestMetric);
            } else {
                json.put("best_metric", bestMetric.toString()); // JSON has no infinities
            }
            json.put("best_global_step", bestGlobalStep);
            if (bestCheckpointStep > 0) {
                // relative to output_dir, so that a run directory moved elsewhere still finds it
                json.put("best_model_checkpoint", Path.of(TrainingOutputs.CHECKPOINTS_DIR)
                        .resolve(TrainingCheckpoint.directoryOf(checkpoints, bestCheckpointStep).getFileName())
                        .toString());
            } else {
                json.putNull("best_model_checkpoint");
            }
            json.put("best_model_checkpoint_step", bestCheckpointStep);
            json.put("early_stopping_patience_counter", patienceCounter);
            json.put("should_training_stop", shouldTrainingStop);
        }

        /** From trainer_state.json; null when it holds none (a run without these keys). */
        static State readFrom(JsonNode json) {
            if (!json.has("best_global_step")) {
                return null;
            }
            JsonNode best = json.get("best_metric");
            return new State(best == null || best.isNull() ? null : Double.valueOf(best.asText()),
                    json.get("best_global_step").asLong(), json.path("best_model_checkpoint_step").asLong(0),
                    json.path("early_stopping_patience_counter").asInt(0),
                    json.path("should_training_stop").asBoolean(false));
        }
    }

    private BestModel(Recipe.Train train) {
        this.metric = train.bestModelMetric();
        this.greaterIsBetter = train.bestModelGreaterIsBetter();
        this.patience = train.earlyStoppingPatience();
        this.threshold = train.earlyStoppingThreshold();
        this.loadBest = train.loadBestModelAtEnd();
    }

    /** The stage's tracker, or null with the keys off. */
    static BestModel of(Recipe.Train train) {
        return train.tracksBestModel() ? new BestModel(train) : null;
    }

    State state() {
        return state;
    }

    void restore(State saved) {
        state = saved == null ? State.NONE : saved;
    }

    boolean loadsBest() {
        return loadBest;
    }

    boolean shouldTrainingStop() {
        return state.shouldTrainingStop();
    }

    String metric() {
        return metric;
    }

    /**
     * An evaluation after step {@code step} (not the one before the first step: transformers' eval_on_start compares
     * nothing). First EarlyStoppingCallback.on_evaluate, against the best before this evaluation; then
     * Trainer._determine_best_metric. Puts best_metric, best_global_step and the patience counter into the record.
     */
    void evaluated(long step, Map<String, Object> metrics) {
        Object found = metrics.get(metric);
        if (!(found instanceof Number number)) {
            // transformers raises KeyError here: "metric_for_best_model ... not found in the evaluation metrics"
            throw new Refusal("train.metric_for_best_model: " + metric + " is not among the evaluation metrics of "
                    + "this run " + metrics.keySet().stream().filter(name -> name.startsWith("eval_")).toList()
                    + ": choose one of them (eval_ may be left out)");
        }
        double value = number.doubleValue();
        Double best = state.bestMetric();
        int counter = state.patienceCounter();
        boolean stop = false;
        if (patience != null) {
            // trainer_callback.py EarlyStoppingCallback.check_metric_value
            if (best == null || better(value, best) && Math.abs(value - best) > threshold) {
                counter = 0;
            } else {
                counter++;
            }
            stop = counter >= patience;
        }
        if (best == null) {
            best = greaterIsBetter ? Double.NEGATIVE_INFINITY : Double.POSITIVE_INFINITY;
        }
        long bestStep = state.bestGlobalStep();
        if (better(value, best)) { // trainer.py _determine_best_metric: np.greater / np.less, no threshold
            best = value;
            bestStep = step;
        }
        state = new State(best, bestStep, state.bestCheckpointStep(), counter, stop);
        metrics.put("best_metric", best);
        metrics.put("best_global_step", bestStep);
        if (patience != null) {
            metrics.put("early_stopping_patience_counter", counter);
        }
    }

    private boolean better(double value, double than) {
        return greaterIsBetter ? value > than : value < than;
    }

    /**
     * A checkpoint of {@code step} is being written: at a save of the cadence (save_every, the stage's end), the best
     * step's checkpoint becomes the best kept, as trainer.py _save_checkpoint sets best_model_checkpoint when the best
     * step's folder exists. A checkpoint written only because the run was cancelled or stopped early is not one the
     * uninterrupted run (or transformers) writes, so it never becomes the best kept.
     */
    void saving(long step, boolean onCadence) {
        if (onCadence && state.bestGlobalStep() == step) {
            state = new State(state.bestMetric(), state.bestGlobalStep(), step, state.patienceCounter(),
                    state.shouldTrainingStop());
        }
    }

    /** The best checkpoint kept, or null. */
    Path bestCheckpoint(Path checkpoints) {
        return state.bestCheckpointStep() > 0 ? TrainingCheckpoint.directoryOf(checkpoints, state.bestCheckpointStep())
                : null;
    }

    /**
     * The stage's end: with keep_last 1 only the best checkpoint stays, as transformers' Trainer deletes every other
     * one at the end of train() when save_total_limit is 1 (rotation kept the newest beside it until then).
     */
    static void keepOnlyBest(Path checkpoints, int keepLast, Path best) {
        if (keepLast != 1 || best == null) {
            return;
        }
        for (Path checkpoint : TrainingCheckpoint.list(checkpoints)) {
            if (!checkpoint.equals(best)) {
                try {
                    TrainingCheckpoint.delete(checkpoint);
                } catch (IOException e) {
                    throw new UncheckedIOException("cannot delete " + checkpoint + ": " + e.getMessage(), e);
                }
            }
        }
    }

    /** The line for people when early stopping ends the stage. */
    String stopLine(long step) {
        return String.format(Locale.ROOT, "step %d: early stopping: %s did not improve on %s by more than %s for %d "
                + "evaluation(s) (train.early_stopping_patience); training stops here", step, metric,
                state.bestGlobalStep() > 0 ? String.format(Locale.ROOT, "%.6g (step %d)", state.bestMetric(),
                        state.bestGlobalStep()) : "the first evaluation", threshold, patience);
    }
}
