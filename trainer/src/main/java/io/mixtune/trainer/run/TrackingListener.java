package io.mixtune.trainer.run;

import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.tracking.MetricsSink;

/**
 * The experiment trackers the recipe's {@code logging} section turns on (TensorBoard), as a listener: each receives
 * the records metrics.jsonl receives, opened when the run starts (a resumed run's from its checkpoint's step on).
 */
public final class TrackingListener implements TrainingListener, AutoCloseable {
    private final Recipe recipe;
    private MetricsSink sink = MetricsSink.NONE;

    public TrackingListener(Recipe recipe) {
        this.recipe = recipe;
    }

    @Override
    public void onRunStarted(RunStarted event) {
        close();
        sink = MetricsSink.forRecipe(recipe, event.outputDir(),
                event.resumedFrom() == null ? -1 : event.firstStep());
    }

    @Override
    public void onStep(StepEnded event) {
        if (event.logged()) {
            sink.write(MetricsLog.record(event.metrics()));
        }
    }

    @Override
    public void onEvaluation(Evaluated event) {
        sink.write(MetricsLog.record(event.metrics()));
    }

    /** The best checkpoint's record at a stage's end, as metrics.jsonl holds it (best_metric, ...). */
    @Override
    public void onStageKept(StageKept event) {
        sink.write(MetricsLog.record(event.metrics()));
    }

    @Override
    public void onRunFinished(RunFinished event) {
        close();
    }

    @Override
    public void close() {
        sink.close();
        sink = MetricsSink.NONE;
    }
}
