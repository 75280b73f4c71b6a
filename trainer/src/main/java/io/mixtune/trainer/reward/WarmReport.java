package io.mixtune.trainer.reward;

import ai.djl.Device;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.trainer.dpo.DpoRecipe;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.run.TrainingModel;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * WARM's report: each member's accuracy and mean margin on the validation pairs beside the weight average's, scored as
 * {@code mixtune reward} scores a pairs file (the same batches, so the same figures). Validation pairs are never
 * flipped by reward.label_noise: the figures say how well each model learned the true preferences.
 *
 * @param members one row per member, in order
 * @param average the weight average's row
 */
public record WarmReport(int validationPairs, double labelNoise, List<Row> members, Row average) {
    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * @param dataSeed, learningRate, loraDropout the member's own settings (the average's: null, NaN, NaN)
     */
    public record Row(String name, Path adapter, Long dataSeed, double learningRate, double loraDropout,
            double accuracy, double meanMargin) {}

    /**
     * Scores every member's adapter and the average's on the members' validation pairs.
     *
     * @param members the members' recipes, whose adapters are {@code output_dir/adapter}
     */
    public static WarmReport measure(Recipe warm, List<Recipe> members, Path average) {
        Recipe first = members.get(0);
        List<PreferenceSample> validation = DpoRecipe.loadPairs(first).validation();
        Path base = TrainingData.baseModelDir(first);
        Device device = TrainingModel.check(first);
        MistralCheckpoint.LinearFactory linears = TrainingModel.linears(first.model());
        List<Row> rows = new ArrayList<>();
        for (int k = 0; k < members.size(); k++) {
            Recipe member = members.get(k);
            Path adapter = Path.of(member.outputDir(), "adapter");
            RewardScorer.PairScores scores = score(base, adapter, linears, device, validation);
            rows.add(new Row("member " + k, adapter, member.train().shuffleSeed(), member.train().lr(),
                    member.lora().dropout(), scores.accuracy(), scores.meanMargin()));
        }
        RewardScorer.PairScores scores = score(base, average, linears, device, validation);
        Row averageRow = new Row("WARM average of " + members.size(), average, null, Double.NaN, Double.NaN,
                scores.accuracy(), scores.meanMargin());
        return new WarmReport(validation.size(), warm.reward().labelNoise(), List.copyOf(rows), averageRow);
    }

    private static RewardScorer.PairScores score(Path base, Path adapter, MistralCheckpoint.LinearFactory linears,
            Device device, List<PreferenceSample> pairs) {
        try (RewardScorer scorer = RewardScorer.load(base, adapter, linears, device)) {
            return scorer.pairs(pairs, RewardScorer.DEFAULT_BATCH_SIZE);
        }
    }

    /** The report for people: a header, then one line per member and one for the average. */
    public List<String> lines() {
        List<String> lines = new ArrayList<>();
        lines.add(String.format(Locale.ROOT, "WARM report on %d validation pairs%s: accuracy, mean margin",
                validationPairs, labelNoise > 0 ? String.format(Locale.ROOT, " (training labels flipped: %s)",
                        labelNoise) : ""));
        for (Row row : members) {
            lines.add(String.format(Locale.ROOT, "  %s (data_seed %d, lr %.2e, lora_dropout %.2f): %.4f, %.4f",
                    row.name(), row.dataSeed(), row.learningRate(), row.loraDropout(), row.accuracy(),
                    row.meanMargin()));
        }
        lines.add(String.format(Locale.ROOT, "  %s: %.4f, %.4f (%s)", average.name(), average.accuracy(),
                average.meanMargin(), average.adapter()));
        return lines;
    }

    /** Writes the report as JSON, replaced whole. */
    public void write(Path file) {
        ObjectNode json = JSON.createObjectNode();
        json.put("validation_pairs", validationPairs);
        json.put("label_noise", labelNoise);
        ArrayNode rows = json.putArray("members");
        for (int k = 0; k < members.size(); k++) {
            Row row = members.get(k);
            rows.addObject().put("member", k).put("adapter", row.adapter().toString())
                    .put("data_seed", row.dataSeed()).put("learning_rate", row.learningRate())
                    .put("lora_dropout", row.loraDropout()).put("accuracy", row.accuracy())
                    .put("mean_margin", row.meanMargin());
        }
        json.putObject("average").put("adapter", average.adapter().toString()).put("accuracy", average.accuracy())
                .put("mean_margin", average.meanMargin());
        Path partial = file.resolveSibling(file.getFileName() + ".partial");
        try {
            JSON.writerWithDefaultPrettyPrinter().writeValue(partial.toFile(), json);
            Files.move(partial, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + file + ": " + e.getMessage(), e);
        }
    }
}
