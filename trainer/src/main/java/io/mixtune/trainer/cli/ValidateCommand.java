package io.mixtune.trainer.cli;

import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.data.dataset.PreferenceDataset;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.trainer.chat.TemplateWarning;
import io.mixtune.trainer.dpo.DpoRecipe;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.recipe.RecipeValueException;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.run.TrainingModel;
import java.io.PrintStream;
import java.util.Locale;
import io.mixtune.data.dataset.LabeledDataset;
import io.mixtune.data.preference.LabeledSample;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.distill.DistillTeacher;
import io.mixtune.trainer.grpo.GrpoRecipe;
import io.mixtune.trainer.grpo.PromptDataset;
import io.mixtune.trainer.grpo.RewardFunctions;
import io.mixtune.trainer.kto.KtoRecipe;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * `mixtune validate`: reads and checks a recipe as `train` does before its first step (keys, types, ranges, files,
 * the model's shapes, and the data read and tokenized as training reads it, without writing the cache), loading no
 * weights, and prints it resolved. Every problem of the recipe is reported at once, each at its file:line.
 */
final class ValidateCommand implements Command {
    @Override
    public String name() {
        return "validate";
    }

    @Override
    public String summary() {
        return "check a recipe as train does before step 1 (keys, types, ranges, files, data) and print it with every "
                + "default filled in";
    }

    @Override
    public String usage() {
        return "--recipe R.yaml [--set key.path=value ...]";
    }

    @Override
    public Options options() {
        return new Options().addOption(Mixtune.option("recipe", "FILE", "the recipe to check"))
                .addOption(TrainCommand.setOption());
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
        RecipeReader.Loaded loaded = TrainCommand.readLoaded(line);
        Recipe recipe = loaded.recipe();
        String data;
        String shapesOnly = null;
        try {
            try {
                TrainingModel.check(recipe);
            } catch (RecipeValueException e) {
                // The ready recipes for real models name a preset of shapes, for `plan`; train takes --set model.path.
                if (!e.key().equals("model.preset")) {
                    throw e;
                }
                shapesOnly = loaded.problem(e.key(), e.problem());
            }
            data = checkData(recipe);
        } catch (RecipeValueException e) {
            throw loaded.locate(e);
        }
        out.print(RecipeReader.toYaml(recipe));
        loaded.warnings().forEach(warning -> out.println("# warning: " + warning));
        String markers = TemplateWarning.of(recipe);
        if (markers != null) {
            out.println("# warning: " + markers);
        }
        if (shapesOnly != null) {
            out.println("# to train: " + shapesOnly);
        }
        out.println("# " + line.getOptionValue("recipe") + ": ok (" + data + ")");
        return Mixtune.OK;
    }

    /** What train checks of the data before step 1; returns what the data holds. */
    private static String checkData(Recipe recipe) {
        if (recipe.train().readsPrompts()) {
            // Java reward functions are added at run time: validate checks the recipe's own as if they were all
            GrpoRecipe.check(recipe, recipe.policyGradient().rewardFuncs().isEmpty() ? 1 : 0);
            for (int i = 0; i < recipe.policyGradient().rewardFuncs().size(); i++) {
                RewardFunctions.of(recipe.policyGradient().rewardFuncs().get(i), recipe.policyGradientSection()
                        + ".reward_funcs[" + i + "]", folder -> null);
            }
            SampleCache.TokenizerFile tokenizerFile = TrainingData.tokenizer(recipe);
            try (TextTokenizer tokenizer = tokenizerFile.open()) {
                PromptDataset prompts = GrpoRecipe.loadPrompts(recipe, tokenizerFile, tokenizer);
                return String.format(Locale.ROOT, "%d prompts (%d invalid skipped), reward functions %s",
                        prompts.size(), prompts.skipped().size(), recipe.policyGradient().rewardFuncs());
            }
        }
        if (recipe.train().readsLabeledExamples()) {
            LabeledDataset examples = KtoRecipe.loadExamples(recipe);
            long desirable = examples.train().stream().filter(LabeledSample::label).count();
            return String.format(Locale.ROOT, "%d training examples (%d desirable, %d undesirable), %d validation "
                    + "examples", examples.train().size(), desirable, examples.train().size() - desirable,
                    examples.validation().size());
        }
        if (recipe.train().readsPreferencePairs()) {
            PreferenceDataset pairs = DpoRecipe.loadPairs(recipe);
            return String.format(Locale.ROOT, "%d training pairs%s, %d validation pairs", pairs.trainPairs(),
                    recipe.train().trainsWithoutReference() ? "" : " in " + pairs.stages().size() + " stage(s)",
                    pairs.validation().size());
        }
        ChatDataset samples = TrainingData.requireTrainingSamples(recipe, SampleCache.tokenize(recipe.data(),
                TrainingData.tokenizer(recipe), recipe.train().seed()));
        String teacher = "";
        if (recipe.train().method().equals("distillation")) {
            DistillTeacher.check(recipe);
            teacher = "; teacher " + DistillTeacher.dir(recipe) + " shares the student's tokenizer";
        }
        return String.format(Locale.ROOT, "%d training samples, %d validation samples; %s%s", samples.train().size(),
                samples.validation().size(), samples.report(), teacher);
    }
}
