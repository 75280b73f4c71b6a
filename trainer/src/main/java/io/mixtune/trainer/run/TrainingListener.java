package io.mixtune.trainer.run;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Receives what a training run does, as typed events, in order: {@link RunStarted}, then per stage (SFT has one)
 * {@link StageStarted}, {@link StepEnded} after every optimizer step, {@link Evaluated}, {@link SamplesGenerated}
 * (with train.eval_prompts) and {@link CheckpointSaved} as the recipe's cadence says, and {@link RunFinished} last. {@link #onNote} carries the lines a person reads (the
 * plan, warnings, a skipped float16 step). The progress line, metrics.jsonl, loss.png and TensorBoard are listeners;
 * a listener that throws stops the run, as any other error would. Every method does nothing unless overridden.
 */
public interface TrainingListener {
    /**
     * @param firstStep the step the run starts from (0, or the resumed checkpoint's)
     * @param totalSteps the run's last step, over all stages
     * @param resumedFrom the checkpoint resumed, or null for a fresh run
     */
    record RunStarted(Path outputDir, long firstStep, long totalSteps, Path resumedFrom) {}

    /**
     * @param stage 1-based; SFT has the single stage 1
     * @param firstStep the step before the stage's first (steps count across stages)
     * @param description what the stage trains on, for people
     */
    record StageStarted(int stage, int stageCount, long firstStep, long steps, String description) {}

    /**
     * @param metrics the step's record as metrics.jsonl holds it: step, stage (Stage-DPO), loss, the objective's
     *     metrics, lr, grad_norm, tokens, ... (numbers and booleans, in that order)
     * @param logged whether this step is one the recipe logs (train.log_every, and each stage's last)
     * @param figures the objective's few figures for a progress line beside the loss, such as DPO's reward accuracy
     */
    record StepEnded(long step, long totalSteps, Map<String, Object> metrics, boolean logged, String figures) {
        public double loss() {
            return ((Number) metrics.get("loss")).doubleValue();
        }

        public double learningRate() {
            return ((Number) metrics.get("lr")).doubleValue();
        }

        public double tokensPerSecond() {
            return ((Number) metrics.get("tokens_per_second")).doubleValue();
        }
    }

    /**
     * @param metrics step, stage (Stage-DPO), then eval_ metrics (eval_loss always; eval_loss_ema and the like for the
     *     weight averages)
     * @param summary the objective's one-line account of them
     */
    record Evaluated(long step, Map<String, Object> metrics, String summary) {
        public double loss() {
            return ((Number) metrics.get("eval_loss")).doubleValue();
        }
    }

    /**
     * train.eval_prompts answered at an evaluation, greedily, with the chat template trained with.
     *
     * @param stage the DPO stage (as metrics.jsonl records it), or null (SFT)
     */
    record SamplesGenerated(long step, Integer stage, List<Sample> samples) {}

    /** @param completion the new tokens decoded, as {@code mixtune generate --chat} prints them */
    record Sample(String prompt, String completion) {}

    record CheckpointSaved(long step, Path directory) {}

    record RunFinished(TrainingResult result) {}

    /**
     * The end of a stage that kept the best checkpoint (train.metric_for_best_model, load_best_model_at_end,
     * early_stopping_patience): best_metric, best_global_step, best_model_checkpoint, should_training_stop and the
     * step the adapter came from, a record of metrics.jsonl.
     */
    record StageKept(long step, Map<String, Object> metrics) {}

    default void onNote(String line) {}

    default void onRunStarted(RunStarted event) {}

    default void onStageStarted(StageStarted event) {}

    default void onStep(StepEnded event) {}

    default void onEvaluation(Evaluated event) {}

    default void onSamples(SamplesGenerated event) {}

    default void onCheckpoint(CheckpointSaved event) {}

    default void onRunFinished(RunFinished event) {}

    default void onStageKept(StageKept event) {}

    /** One listener passing each event to {@code listeners}, in their order. */
    static TrainingListener all(List<? extends TrainingListener> listeners) {
        List<TrainingListener> copy = new ArrayList<>(listeners);
        return new TrainingListener() {
            @Override
            public void onNote(String line) {
                copy.forEach(l -> l.onNote(line));
            }

            @Override
            public void onRunStarted(RunStarted event) {
                copy.forEach(l -> l.onRunStarted(event));
            }

            @Override
            public void onStageStarted(StageStarted event) {
                copy.forEach(l -> l.onStageStarted(event));
            }

            @Override
            public void onStep(StepEnded event) {
                copy.forEach(l -> l.onStep(event));
            }

            @Override
            public void onEvaluation(Evaluated event) {
                copy.forEach(l -> l.onEvaluation(event));
            }

            @Override
            public void onSamples(SamplesGenerated event) {
                copy.forEach(l -> l.onSamples(event));
            }

            @Override
            public void onCheckpoint(CheckpointSaved event) {
                copy.forEach(l -> l.onCheckpoint(event));
            }

            @Override
            public void onRunFinished(RunFinished event) {
                copy.forEach(l -> l.onRunFinished(event));
            }

            @Override
            public void onStageKept(StageKept event) {
                copy.forEach(l -> l.onStageKept(event));
            }
        };
    }
}
