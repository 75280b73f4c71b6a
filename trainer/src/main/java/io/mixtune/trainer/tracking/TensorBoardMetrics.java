package io.mixtune.trainer.tracking;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;

/**
 * metrics.jsonl as TensorBoard scalars under output_dir/runs/: each numeric field of a record but {@code step} is a
 * scalar of the same name at that step (true/false as 1/0; text fields are left out), so the two read one to one; and
 * the resolved recipe (recipe.yaml) as text at step 0.
 */
public final class TensorBoardMetrics implements MetricsSink {
    /** Under output_dir; what {@code tensorboard --logdir output_dir/runs} shows. */
    public static final String RUNS_DIR = "runs";
    public static final String RECIPE_TAG = "recipe";

    private final TensorBoardWriter writer;
    /** Each tag's last step and value, so a value two records at one step share is written once (see write). */
    private final Map<String, Long> lastStep = new HashMap<>();
    private final Map<String, Double> lastValue = new HashMap<>();

    TensorBoardMetrics(TensorBoardWriter writer) {
        this.writer = writer;
    }

    /**
     * A new event file in output_dir/runs. A resumed run's file starts at step {@code resumedStep + 1}, where
     * TensorBoard drops what the stopped run wrote past its checkpoint ({@link TensorBoardWriter}), and writes the
     * recipe only when no earlier file holds it.
     */
    static TensorBoardMetrics open(Recipe recipe, Path outputDir, long resumedStep) {
        Path dir = outputDir.resolve(RUNS_DIR);
        boolean earlierFiles = !TensorBoardWriter.eventFiles(dir).isEmpty();
        TensorBoardWriter writer = TensorBoardWriter.open(dir, Math.max(0, resumedStep + 1));
        if (resumedStep < 0 || !earlierFiles) {
            // Fenced, so that the Text tab's Markdown keeps the YAML's lines and indentation.
            writer.text(RECIPE_TAG, 0, "```yaml\n" + RecipeReader.toYaml(recipe) + "```\n");
        }
        return new TensorBoardMetrics(writer);
    }

    @Override
    public void write(ObjectNode record) {
        long step = record.path("step").asLong();
        Iterator<Map.Entry<String, JsonNode>> fields = record.fields();
        while (fields.hasNext()) {
            Map.Entry<String, JsonNode> field = fields.next();
            JsonNode value = field.getValue();
            if (field.getKey().equals("step")) {
                continue;
            }
            if (value.isNumber()) {
                scalar(field.getKey(), step, value.doubleValue());
            } else if (value.isBoolean()) {
                scalar(field.getKey(), step, value.booleanValue() ? 1 : 0);
            }
        }
    }

    /**
     * A DPO step's train and eval records both carry its {@code stage}: written once, so every tag has one value per
     * step in TensorBoard (whose Python loader would show a repeat twice).
     */
    private void scalar(String tag, long step, double value) {
        if (Long.valueOf(step).equals(lastStep.get(tag)) && Double.valueOf(value).equals(lastValue.get(tag))) {
            return;
        }
        writer.scalar(tag, step, value);
        lastStep.put(tag, step);
        lastValue.put(tag, value);
    }

    @Override
    public void close() {
        writer.close();
    }
}
