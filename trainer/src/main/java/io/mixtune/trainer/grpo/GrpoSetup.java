package io.mixtune.trainer.grpo;

import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.TrainingModel;
import java.util.List;

/**
 * What a GRPO run works with once set up: the model with its adapter, the prompts, the reward functions and their
 * weights, the tokenizer that decodes completions for them, and the ids that end a completion.
 *
 * @param method grpo's or rloo's advantages and loss
 * @param referenceAdapter the frozen reference adapter's name (model.adapter loaded a second time), or null: the base
 */
record GrpoSetup(Recipe recipe, TrainingModel model, PromptDataset data, List<RewardFunctions.Named> rewards,
        double[] weights, TextTokenizer tokenizer, List<Integer> eosIds, String referenceAdapter,
        PolicyGradient method) {}
