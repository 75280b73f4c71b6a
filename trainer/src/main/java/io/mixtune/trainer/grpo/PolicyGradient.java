package io.mixtune.trainer.grpo;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import io.mixtune.trainer.recipe.GrpoConfig;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RlooConfig;
import java.util.List;

/**
 * What GRPO and RLOO do differently with the same sampled and scored generation batch ({@link GrpoObjective} runs
 * both): the advantages, and the loss of a micro-batch.
 */
interface PolicyGradient {
    /** The method of a recipe whose train.method samples completions: grpo's or rloo's. */
    static PolicyGradient of(Recipe recipe) {
        return recipe.train().method().equals("rloo") ? new Rloo(recipe.rloo()) : new Grpo(recipe.grpo());
    }

    /** Whether the advantages need the sampling policy's per-token log-probs (even at num_iterations 1). */
    boolean advantagesReadOld();

    /**
     * @param scores [completion][function], NaN for a None
     * @param old each completion's per-token log-probs of the sampling policy, or null
     * @param reference each completion's per-token log-probs of the reference, or null (beta 0)
     * @param counted whether each completion counts in the loss (mask_truncated_completions)
     */
    GroupAdvantages.Result advantages(double[][] scores, double[] weights, List<String> names, float[][] old,
            float[][] reference, boolean[] counted);

    /**
     * A micro-batch's objective, as the step's accumulation scales it.
     *
     * @param generationTokens the generation batch's counted completion tokens (TRL's num_items_in_batch)
     */
    GrpoLoss.Objective objective(NDArray policy, GrpoLoss.Tokens tokens, int accumulation, double generationTokens,
            NDManager manager);

    /** TRL's GRPOTrainer: group-normalised advantages, the per-token loss of loss_type. */
    record Grpo(GrpoConfig grpo) implements PolicyGradient {
        @Override
        public boolean advantagesReadOld() {
            return false;
        }

        @Override
        public GroupAdvantages.Result advantages(double[][] scores, double[] weights, List<String> names,
                float[][] old, float[][] reference, boolean[] counted) {
            return GroupAdvantages.of(grpo, scores, weights, names);
        }

        @Override
        public GrpoLoss.Objective objective(NDArray policy, GrpoLoss.Tokens tokens, int accumulation,
                double generationTokens, NDManager manager) {
            return GrpoLoss.objective(grpo, policy, tokens, GrpoLoss.weights(grpo, tokens, accumulation,
                    generationTokens), manager);
        }
    }

    /** TRL's RLOOTrainer: leave-one-out advantages with the KL in the reward, the per-completion loss. */
    record Rloo(RlooConfig rloo) implements PolicyGradient {
        @Override
        public boolean advantagesReadOld() {
            return rloo.beta() != 0;
        }

        @Override
        public GroupAdvantages.Result advantages(double[][] scores, double[] weights, List<String> names,
                float[][] old, float[][] reference, boolean[] counted) {
            return RlooLoss.advantages(rloo, scores, weights, names, old, reference, counted);
        }

        @Override
        public GrpoLoss.Objective objective(NDArray policy, GrpoLoss.Tokens tokens, int accumulation,
                double generationTokens, NDManager manager) {
            return RlooLoss.objective(rloo, policy, tokens, accumulation, manager);
        }
    }
}
