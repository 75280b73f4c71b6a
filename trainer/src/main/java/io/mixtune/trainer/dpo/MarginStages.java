package io.mixtune.trainer.dpo;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.lora.nf4.Nf4Loading;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeValueException;
import io.mixtune.trainer.reward.RewardAdapterFit;
import io.mixtune.trainer.reward.RewardScorer;
import io.mixtune.trainer.run.CachedPreset;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.run.TrainingModel;
import io.mixtune.trainer.run.TrainingOutputs;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/**
 * Stage-DPO from clear to subtle pairs (WizardLM-2: the data split by how clearly chosen beats rejected, the easy part
 * first): dpo.stage_order margin orders the training pairs by margin, largest first, before they are split into the
 * stages. The margin is each pair's score_chosen - score_rejected, or with dpo.margin_model a reward model's
 * r(prompt + chosen) - r(prompt + rejected), scored once before training and kept in output_dir/{@value #CACHE_FILE}
 * (the records `mixtune reward` writes for pairs), so that a resumed run reads the same margins and trains the same
 * stages without scoring again.
 */
public final class MarginStages {
    /** The margins a reward model gave the training pairs, one JSON record per pair in file order. */
    public static final String CACHE_FILE = TrainingOutputs.DPO_MARGINS_FILE;
    /** Pairs per forward pass of the reward model, as `mixtune reward` scores them by default. */
    static final int BATCH_SIZE = 8;
    // Margins are floats: read as decimals and rounded once, they come back as the very floats written.
    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS);

    private MarginStages() {}

    /**
     * The pairs' own margins (score_chosen - score_rejected), or a recipe error naming the first pair without scores.
     */
    static double[] fromScores(List<PreferenceSample> pairs) {
        double[] margins = new double[pairs.size()];
        for (int i = 0; i < margins.length; i++) {
            Double margin = pairs.get(i).margin();
            if (margin == null) {
                throw new RecipeValueException("dpo.stage_order", "margin needs score_chosen and score_rejected in "
                        + "every pair, or dpo.margin_model (a reward model) to score them: " + pairs.get(i).source()
                        + " has no scores");
            }
            margins[i] = margin;
        }
        return margins;
    }

    /**
     * Refuses, from the files alone, a margin_model that is no reward adapter or one for another base; a preset's base
     * not written yet is checked when training writes it.
     */
    static void check(Recipe recipe) {
        Path modelDir = TrainingData.baseModelDir(recipe);
        if (!Files.isRegularFile(modelDir.resolve("config.json"))) {
            return;
        }
        try {
            RewardAdapterFit.require(Path.of(recipe.dpo().marginModel()), modelDir);
        } catch (IllegalArgumentException e) {
            throw new RecipeValueException("dpo.margin_model", e.getMessage());
        }
    }

    /**
     * dpo.margin_model's margins of {@code pairs}: read from output_dir/{@value #CACHE_FILE} when it holds these
     * pairs, else scored (on the base as the recipe loads it) and written there.
     */
    static double[] fromModel(Recipe recipe, List<PreferenceSample> pairs, Consumer<String> notes) {
        Path cache = Path.of(recipe.outputDir(), CACHE_FILE);
        double[] cached = read(cache, pairs);
        if (cached != null) {
            notes.accept("stage order: the margins of " + pairs.size() + " pairs from " + cache);
            return cached;
        }
        Path modelDir = TrainingData.baseModelDir(recipe);
        if (recipe.model().path() == null) {
            CachedPreset.ensure(recipe.model().preset(), modelDir);
        }
        check(recipe);
        Path marginModel = Path.of(recipe.dpo().marginModel());
        MistralCheckpoint.LinearFactory linears = "nf4".equals(recipe.model().quantize())
                ? Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION) : MistralCheckpoint.DENSE;
        RewardScorer.PairScores scores;
        try (RewardScorer scorer = RewardScorer.load(modelDir, marginModel, linears, TrainingModel.check(recipe))) {
            scores = scorer.pairs(pairs, BATCH_SIZE);
        }
        int n = pairs.size();
        double[] margins = new double[n];
        List<String> records = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            float margin = scores.margin(i);
            margins[i] = margin;
            records.add(JSON.createObjectNode().put("source", pairs.get(i).source())
                    .put("reward_chosen", scores.chosen()[i]).put("reward_rejected", scores.rejected()[i])
                    .put("margin", margin).toString());
        }
        write(cache, records);
        notes.accept("stage order: " + n + " pairs scored by " + marginModel + ", margins in " + cache);
        return margins;
    }

    /** The cached margins, or null when the file is missing or holds other pairs. */
    private static double[] read(Path cache, List<PreferenceSample> pairs) {
        if (!Files.isRegularFile(cache)) {
            return null;
        }
        try {
            List<String> lines = Files.readAllLines(cache);
            if (lines.size() != pairs.size()) {
                return null;
            }
            double[] margins = new double[lines.size()];
            for (int i = 0; i < margins.length; i++) {
                JsonNode record = JSON.readTree(lines.get(i));
                if (!pairs.get(i).source().equals(record.path("source").asText()) || !record.path("margin").isNumber()) {
                    return null;
                }
                margins[i] = record.get("margin").decimalValue().floatValue();
            }
            return margins;
        } catch (IOException e) {
            return null; // damaged: scored again
        }
    }

    /** Written beside and renamed, so a kill leaves the whole file or none. */
    private static void write(Path cache, List<String> records) {
        Path partial = cache.resolveSibling(CACHE_FILE + ".partial");
        try {
            Files.createDirectories(cache.getParent());
            Files.write(partial, records);
            Files.move(partial, cache, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + cache + ": " + e.getMessage(), e);
        }
    }
}
