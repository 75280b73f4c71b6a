package io.mixtune.trainer.grpo;

import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.generate.GenerationConfig;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.recipe.GrpoConfig;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeValueException;
import io.mixtune.trainer.reward.RewardScorer;
import io.mixtune.trainer.run.EpochSteps;
import io.mixtune.trainer.run.EvalSamples;
import io.mixtune.trainer.run.MethodRecipe;
import io.mixtune.trainer.run.SingleStageRun;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingModel;
import io.mixtune.trainer.run.TrainingResult;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.function.BooleanSupplier;

/**
 * GRPO (Shao et al. 2024) with (Q)LoRA as TRL 1.13's GRPOTrainer runs it, read top to bottom: {@link #setup} reads and
 * tokenizes the prompts, loads the model and attaches the adapter, and gathers the reward functions (the recipe's
 * built-ins and reward models, then the Java ones); {@link #train} runs the loop ({@link TrainingLoop}) whose every
 * step samples completions, scores them and trains on their advantages ({@link GrpoObjective}), ending with
 * output_dir/adapter. The reference (beta > 0) is never a second copy of the model: the base with the adapter off, or
 * model.adapter loaded a second time and frozen.
 */
public final class GrpoRecipe implements MethodRecipe {
    static final String REFERENCE_ADAPTER = "reference";

    private final Recipe recipe;
    private final TrainingListener listener;
    private final TrainingModel model;
    private final PromptDataset data;
    private final TextTokenizer tokenizer;
    private final List<RewardScorer> scorers = new ArrayList<>();
    private final GrpoSetup setup;
    private final long totalSteps;

    private GrpoRecipe(Recipe recipe, List<RewardFunctions.Named> javaRewards, TrainingListener listener) {
        this.recipe = recipe;
        this.listener = listener;
        GrpoConfig grpo = recipe.policyGradient();
        String section = recipe.policyGradientSection();
        Recipe.Train train = recipe.train();
        check(recipe, javaRewards.size());
        TrainingModel.check(recipe);
        SampleCache.TokenizerFile tokenizerFile = TrainingData.tokenizer(recipe);
        tokenizer = tokenizerFile.open();
        data = loadPrompts(recipe, tokenizerFile, tokenizer);
        int completionsPerStep = train.microBatchSize() * train.gradientAccumulation();
        if (GrpoObjective.generationsPerEpoch(data.size(), completionsPerStep, grpo.numGenerations()) == 0) {
            throw new RecipeValueException("data.files", data.size() + " prompts: a step takes "
                    + completionsPerStep / grpo.numGenerations() + " (train.micro_batch_size x gradient_accumulation / "
                    + section + ".num_generations)");
        }
        model = TrainingModel.load(recipe, listener::onNote);
        String reference = null;
        if (recipe.model().adapter() != null && grpo.beta() != 0) {
            PeftAdapter.load(model.lora(), Path.of(recipe.model().adapter()), REFERENCE_ADAPTER);
            reference = REFERENCE_ADAPTER;
        }
        List<RewardFunctions.Named> rewards = new ArrayList<>();
        for (int i = 0; i < grpo.rewardFuncs().size(); i++) {
            String key = section + ".reward_funcs[" + i + "]";
            rewards.add(RewardFunctions.of(grpo.rewardFuncs().get(i), key, folder -> {
                RewardScorer scorer = RewardScorer.load(model.baseModelDir(), folder, TrainingModel.linears(
                        recipe.model()), model.manager().getDevice());
                scorers.add(scorer);
                return scorer;
            }));
        }
        rewards.addAll(javaRewards);
        double[] weights = new double[rewards.size()];
        for (int i = 0; i < weights.length; i++) {
            weights[i] = grpo.rewardWeights().isEmpty() ? 1.0 : grpo.rewardWeights().get(i);
        }
        List<Integer> eosIds = GenerationConfig.read(model.baseModelDir(), model.model().config()).eosTokenIds();
        setup = new GrpoSetup(recipe, model, data, rewards, weights, tokenizer, eosIds, reference,
                PolicyGradient.of(recipe));
        long generations = GrpoObjective.generationsPerEpoch(data.size(), completionsPerStep, grpo.numGenerations());
        totalSteps = new EpochSteps(generations * grpo.numIterations() * train.gradientAccumulation(),
                train.gradientAccumulation()).stageSteps(train);
    }

    /** What the recipe must say for GRPO beyond its sections' own checks (mixtune validate runs it too). */
    public static void check(Recipe recipe, int javaRewards) {
        GrpoConfig grpo = recipe.policyGradient();
        String section = recipe.policyGradientSection();
        Recipe.Train train = recipe.train();
        int completions = train.microBatchSize() * train.gradientAccumulation();
        if (completions % grpo.numGenerations() != 0) {
            throw new RecipeValueException(section + ".num_generations", "must divide train.micro_batch_size x "
                    + "gradient_accumulation (" + completions + " completions a step, TRL's generation_batch_size), "
                    + "got " + grpo.numGenerations());
        }
        int functions = grpo.rewardFuncs().size() + javaRewards;
        if (functions == 0) {
            throw new RecipeValueException(section + ".reward_funcs", section.toUpperCase(Locale.ROOT) + " needs at "
                    + "least one reward function: name a built-in or a reward model folder here, or add a Java one "
                    + "with Training.rewardFunction");
        }
        if (!grpo.rewardWeights().isEmpty() && grpo.rewardWeights().size() != functions) {
            throw new RecipeValueException(section + ".reward_weights", grpo.rewardWeights().size() + " weights for "
                    + functions + " reward functions (" + grpo.rewardFuncs().size() + " in " + section
                    + ".reward_funcs, " + javaRewards + " from Java): give one each, or none");
        }
        DataConfig data = recipe.data();
        if (!data.validationFiles().isEmpty() || data.validationRatio() > 0) {
            throw new RecipeValueException(data.validationFiles().isEmpty() ? "data.validation_ratio"
                    : "data.validation_files", section.toUpperCase(Locale.ROOT) + " runs no evaluation (TRL's would "
                    + "sample and score validation prompts): drop it");
        }
    }

    /** The prompts, before the model loads so that bad data stops the run first (mixtune validate reads them so). */
    public static PromptDataset loadPrompts(Recipe recipe, SampleCache.TokenizerFile tokenizerFile,
            TextTokenizer tokenizer) {
        DataConfig data = recipe.data();
        try {
            return PromptDataset.read(data.files().stream().map(DataConfig::file).toList(),
                    EvalSamples.chatTemplate(recipe, tokenizerFile), tokenizer, data.maxSeqLen() - 1,
                    data.skipInvalid());
        } catch (InvalidRecordException e) {
            throw new RecipeValueException("data.files", e.getMessage());
        }
    }

    /** @param javaRewards the Java reward functions, after the recipe's (Training.rewardFunction) */
    public static GrpoRecipe setup(Recipe recipe, List<RewardFunctions.Named> javaRewards,
            TrainingListener listener) {
        return new GrpoRecipe(recipe, javaRewards, listener);
    }

    @Override
    public long totalSteps() {
        return totalSteps;
    }

    @Override
    public TrainingResult train(Path resumeFrom, BooleanSupplier cancelled) {
        return new SingleStageRun(recipe, model, listener, totalSteps).train(resumeFrom, cancelled,
                this::describePlan, start -> new GrpoObjective(setup, start.step() > 0 && resumeFrom != null
                        ? Rollouts.read(resumeFrom) : null));
    }

    private void describePlan(Path outputDir) {
        GrpoConfig grpo = recipe.policyGradient();
        Recipe.Train train = recipe.train();
        listener.onNote(model.describe(recipe));
        boolean rloo = recipe.train().method().equals("rloo");
        listener.onNote(String.format(Locale.ROOT, "%s: %s, %d completions per prompt of at most %d "
                + "tokens, temperature %s, beta %s%s, %s, reward functions %s", rloo ? "RLOO" : "GRPO",
                rloo ? "leave-one-out advantages, the KL in the reward" : "loss_type " + grpo.lossType(),
                grpo.numGenerations(), grpo.maxCompletionLength(), grpo.temperature(), grpo.beta(),
                grpo.beta() == 0 ? "" : setup.referenceAdapter() != null ? " (reference: base + "
                        + recipe.model().adapter() + ", frozen)" : " (reference: the base, adapter off)",
                rloo ? "normalize_advantages " + recipe.rloo().normalizeAdvantages()
                        : "scale_rewards " + grpo.scaleRewards(),
                setup.rewards().stream().map(RewardFunctions.Named::name).toList()));
        listener.onNote(String.format(Locale.ROOT, "prompts: %d%s", data.size(), data.skipped().isEmpty() ? ""
                : ", " + data.skipped().size() + " invalid records skipped (first: " + data.skipped().get(0)
                        .getMessage() + ")"));
        listener.onNote(String.format(Locale.ROOT, "training %d steps of %d prompts x %d completions (%d x %d), "
                + "lr %.2e %s, output %s", totalSteps, train.microBatchSize() * train.gradientAccumulation()
                        / grpo.numGenerations(), grpo.numGenerations(), train.microBatchSize(),
                train.gradientAccumulation(), train.lr(), train.schedule(), outputDir));
    }

    @Override
    public void close() {
        scorers.forEach(RewardScorer::close);
        tokenizer.close();
        model.close();
    }
}
