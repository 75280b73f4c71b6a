package io.mixtune.trainer.run;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/**
 * What a training run left: the steps it reached, whether a listener cancelled it (then the last checkpoint is where
 * to resume, and no final adapter was written), the adapters and checkpoints in output_dir, and how each stage went.
 *
 * @param alreadyFinished resumed from a run that had finished (at its last step): no step ran, {@code stages} is
 *     empty, and the adapters were written again from its last checkpoint (HF's Trainer resumed at its last step trains
 *     nothing too)
 * @param adapterDir the final adapter (PEFT format), or null when cancelled
 * @param averagedAdapters the weight averages' adapters beside it by name (ema, swa, lawa)
 * @param checkpoints the checkpoints output_dir holds, oldest first
 * @param stages the stages this run trained in (SFT: one; a stage finished before a resume has none)
 */
public record TrainingResult(long steps, boolean cancelled, boolean alreadyFinished, Path adapterDir, Map<String, Path> averagedAdapters,
        List<Path> checkpoints, List<StageResult> stages) {

    /**
     * @param lastMetrics the record of the stage's last step in this run (as metrics.jsonl holds it)
     * @param firstEvaluation the stage's first evaluation in this run (SFT: before the first step), or null
     * @param lastEvaluation the stage's last evaluation in this run, or null without validation data
     * @param adapterDir the stage's adapter, or null when cancelled
     */
    public record StageResult(int stage, long lastStep, double firstLoss, double lastLoss,
            Map<String, Object> lastMetrics, Map<String, Object> firstEvaluation, Map<String, Object> lastEvaluation,
            Path adapterDir, Map<String, Path> averagedAdapters) {
        /** A metric of the stage's last step, or NaN when it has none. */
        public double metric(String name) {
            Object value = lastMetrics.get(name);
            return value instanceof Number number ? number.doubleValue() : Double.NaN;
        }
    }

    /** The last stage's outcome (SFT's only one); null when no step ran in this run. */
    public StageResult lastStage() {
        return stages.isEmpty() ? null : stages.get(stages.size() - 1);
    }
}
