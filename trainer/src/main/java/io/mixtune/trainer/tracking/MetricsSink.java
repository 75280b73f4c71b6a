package io.mixtune.trainer.tracking;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.trainer.recipe.Recipe;
import java.nio.file.Path;

/**
 * Receives every record metrics.jsonl receives, as it is written: where an experiment tracker (TensorBoard) hooks into
 * a run.
 */
public interface MetricsSink extends AutoCloseable {
    /** Receives nothing. */
    MetricsSink NONE = new MetricsSink() {
        @Override
        public void write(ObjectNode record) {}

        @Override
        public void close() {}
    };

    /** One metrics record: {@code step} and the values measured at it. */
    void write(ObjectNode record);

    @Override
    void close();

    /**
     * The trackers the recipe's {@code logging} section turns on, for a run that starts fresh ({@code resumedStep}
     * &lt; 0) or resumes after step {@code resumedStep}.
     */
    static MetricsSink forRecipe(Recipe recipe, Path outputDir, long resumedStep) {
        return recipe.logging().tensorboard() ? TensorBoardMetrics.open(recipe, outputDir, resumedStep) : NONE;
    }
}
