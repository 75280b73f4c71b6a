package io.mixtune.trainer.reward;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.nn.Activation;
import io.mixtune.model.nn.Scalars;
import io.mixtune.trainer.recipe.Recipe;

/**
 * TRL 1.13's RewardTrainer.compute_loss: the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected - margin), the
 * mean over the micro-batch's pairs, plus center_rewards_coefficient x mean((r_chosen + r_rejected)^2) when set.
 */
public final class RewardLoss {
    private RewardLoss() {}

    /**
     * @param rewards float32 [2 pairs], chosen rows then rejected rows
     * @param margins per pair, or null for none
     */
    public static NDArray of(Recipe.Reward reward, NDArray rewards, float[] margins, NDManager manager) {
        long pairs = rewards.getShape().get(0) / 2;
        NDArray chosen = rewards.get(new NDIndex("0:{}", pairs));
        NDArray rejected = rewards.get(new NDIndex("{}:", pairs));
        NDArray difference = chosen.sub(rejected);
        if (margins != null) {
            difference = difference.sub(manager.create(margins));
        }
        // -log sigmoid(x) = softplus(-x), which torch's softplus keeps finite for large |x|.
        NDArray loss = Activation.softPlus(difference.neg()).mean();
        Double center = reward.centerRewardsCoefficient();
        if (center != null) {
            loss = loss.add(Scalars.times(chosen.add(rejected).square().mean(), center));
        }
        return loss;
    }
}
