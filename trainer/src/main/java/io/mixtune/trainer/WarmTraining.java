package io.mixtune.trainer;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.merging.MergeConfig;
import io.mixtune.merging.MergeMethod;
import io.mixtune.merging.MergeReport;
import io.mixtune.merging.ModelMerge;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.reward.WarmReport;
import io.mixtune.trainer.run.CachedPreset;
import io.mixtune.trainer.run.RunDirectory;
import io.mixtune.trainer.run.TrainingCheckpoint;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingModel;
import io.mixtune.trainer.run.TrainingOutputs;
import io.mixtune.trainer.run.TrainingResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * A WARM recipe (Ramé et al. 2024, warm.members >= 2): the members trained one after another, each as the recipe
 * trains a reward model, in output_dir/members/K/ (a run directory of its own: checkpoints, metrics, adapter); then
 * their weight average as {@code mixtune merge --method warm} writes it, in output_dir/adapter; then each member's
 * and the average's accuracy on the validation pairs ({@link WarmReport}, output_dir/warm-report.json).
 *
 * <p>The members share their start: the base (a preset's base-model/ is written once, in output_dir), model.adapter
 * if given, and the LoRA and head initialisation, all from train.seed; they differ in what warm.vary lists: the data
 * order and dropout masks (train.data_seed), the learning rate, the LoRA dropout. Resumed, a member whose adapter
 * exists is finished and skipped, an unfinished one resumes from its newest checkpoint; with every member finished,
 * the result is {@link TrainingResult#alreadyFinished} and the average and report are written again.
 */
final class WarmTraining {
    private final Recipe recipe;
    private final List<TrainingListener> listeners;
    private volatile boolean cancelled;
    private volatile Training running;

    /** @param listeners hear every member's run as a run of its own, and the WARM notes and result */
    WarmTraining(Recipe recipe, List<TrainingListener> listeners) {
        this.recipe = recipe;
        this.listeners = List.copyOf(listeners);
    }

    /** Stops the member in training after its step in progress (resume continues it). */
    void cancel() {
        cancelled = true;
        Training member = running;
        if (member != null) {
            member.cancel();
        }
    }

    /** Member k's recipe: the WARM recipe with k's varied values, its own output_dir, the shared base. */
    static Recipe member(Recipe recipe, int k) {
        Recipe.Warm.Vary vary = recipe.warm().vary();
        Path outputDir = Path.of(recipe.outputDir());
        return RecipeReader.edited(recipe, "warm member " + k + " of " + recipe.outputDir(), tree -> {
            tree.put("output_dir", outputDir.resolve(TrainingOutputs.MEMBERS_DIR).resolve(String.valueOf(k))
                    .toString());
            if (recipe.model().preset() != null) {
                section(tree, "model").put("path", outputDir.resolve(TrainingData.BASE_MODEL_DIR).toString())
                        .putNull("preset");
            }
            Long seed = Recipe.Warm.Vary.of(vary.seed(), k);
            if (seed != null) {
                section(tree, "train").put("data_seed", seed);
            }
            Double lr = Recipe.Warm.Vary.of(vary.learningRate(), k);
            if (lr != null) {
                section(tree, "train").put("lr", lr);
            }
            Double dropout = Recipe.Warm.Vary.of(vary.loraDropout(), k);
            if (dropout != null) {
                section(tree, "lora").put("dropout", dropout);
            }
            section(section(tree, "warm").put("members", 0), "vary").removeAll();
        });
    }

    private static ObjectNode section(ObjectNode tree, String name) {
        return (ObjectNode) tree.get(name);
    }

    TrainingResult run(RunDirectory.Start start, Path recipeFile) {
        TrainingListener listener = TrainingListener.all(listeners);
        TrainingModel.check(recipe);
        Path outputDir = Path.of(recipe.outputDir());
        try (RunDirectory run = RunDirectory.open(recipe, start, recipeFile)) {
            boolean resuming = start == RunDirectory.Start.RESUME;
            if (resuming) {
                String warning = run.requireSameRecipe(recipe);
                if (warning != null) {
                    listener.onNote(warning);
                }
            }
            if (recipe.model().preset() != null) {
                CachedPreset.ensure(recipe.model().preset(), outputDir.resolve(TrainingData.BASE_MODEL_DIR));
            }
            TrainingOutputs.writeResolvedRecipe(recipe, outputDir, resuming);
            int count = recipe.warm().members();
            List<Recipe> members = new ArrayList<>();
            for (int k = 0; k < count; k++) {
                members.add(member(recipe, k));
            }
            List<TrainingResult.StageResult> stages = new ArrayList<>();
            List<Path> adapters = new ArrayList<>();
            long steps = 0;
            // Resumed with every member finished (its adapter there, or its run at its last step): no step runs.
            boolean alreadyFinished = resuming;
            for (int k = 0; k < count; k++) {
                Recipe member = members.get(k);
                Path memberDir = Path.of(member.outputDir());
                Path adapter = memberDir.resolve("adapter");
                adapters.add(adapter);
                if (Files.isRegularFile(adapter.resolve(PeftAdapter.WEIGHTS_FILE))) {
                    listener.onNote(String.format(Locale.ROOT, "WARM member %d (%d of %d): finished (%s), skipped", k,
                            k + 1, count, adapter));
                    continue;
                }
                listener.onNote(String.format(Locale.ROOT, "WARM member %d (%d of %d) in %s: data_seed %d, lr "
                        + "%.2e, lora_dropout %.2f", k, k + 1, count, memberDir, member.train().shuffleSeed(),
                        member.train().lr(), member.lora().dropout()));
                Training training = Training.of(member);
                listeners.forEach(training::listener);
                if (!TrainingOutputs.runOutputs(memberDir).isEmpty()) {
                    // Only a resumed WARM run finds a member begun: a fresh one refused output_dir, --force cleared it.
                    if (TrainingCheckpoint.list(memberDir.resolve(TrainingOutputs.CHECKPOINTS_DIR)).isEmpty()) {
                        training.force(); // stopped before its first checkpoint: it starts over
                    } else {
                        training.resume();
                    }
                }
                running = training;
                if (cancelled) {
                    return new TrainingResult(steps, true, false, null, Map.of(), List.of(), stages);
                }
                TrainingResult result = training.run();
                running = null;
                steps += result.steps();
                stages.addAll(result.stages());
                alreadyFinished &= result.alreadyFinished();
                if (result.cancelled()) {
                    return new TrainingResult(steps, true, false, null, Map.of(), result.checkpoints(), stages);
                }
            }
            Path average = outputDir.resolve("adapter");
            MergeReport merged = ModelMerge.run(new MergeConfig(MergeMethod.WARM, null, MergeConfig.models(adapters,
                    null), MergeConfig.Parameters.none(), null, null, null, null, average), true, Long.MAX_VALUE);
            merged.lines().forEach(listener::onNote);
            WarmReport report = WarmReport.measure(recipe, members, average);
            report.write(outputDir.resolve(TrainingOutputs.WARM_REPORT_FILE));
            report.lines().forEach(listener::onNote);
            listener.onNote("WARM report: " + outputDir.resolve(TrainingOutputs.WARM_REPORT_FILE));
            TrainingResult result = new TrainingResult(steps, false, alreadyFinished, average, Map.of(), List.of(),
                    stages);
            listener.onRunFinished(new TrainingListener.RunFinished(result));
            return result;
        }
    }
}
