package io.mixtune.trainer.reward;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Scalars;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.DecoderBackward;
import io.mixtune.trainer.run.Objective;
import io.mixtune.trainer.run.StepContext;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalLong;

/**
 * One reward-model step: per micro-batch the rewards of its chosen and rejected rows in one forward pass, the
 * Bradley-Terry loss ({@link RewardLoss}), backward into the LoRA arrays and the score head. As TRL (HF's Trainer
 * without num_items_in_batch), the step's loss is the mean of its micro-batches' losses; the router coefficient
 * (context.auxCoefficient) x the load-balancing loss is added where it is above 0, which a reward run's never is
 * (Recipe.Train.routerAuxCoefficient: TRL's reward model adds no router term).
 */
public final class RewardStep {
    private RewardStep() {}

    /**
     * A micro-batch's objective and rewards, at the weights as they are.
     *
     * @param loadBalancing the router loss before its coefficient, 0 for a dense model
     */
    public record Terms(NDArray objective, NDArray loss, float[] rewards, double loadBalancing) {}

    /**
     * The micro-batch's terms with the adapters as the caller left them (training flag, active adapter), for
     * evaluation: torch's generator is left alone (training's backward goes through {@link DecoderBackward}).
     */
    public static Terms of(CausalLm model, NDArray head, Recipe.Reward reward, RewardBatch batch,
            double auxCoefficient, NDManager manager) {
        CausalLmLoss.Forward forward = CausalLmLoss.forward(model, batch.pairs().rows(), manager,
                OptionalLong.empty());
        NDArray rewards = RewardHead.rewards(forward.states(), batch.positions(), head, manager);
        NDArray loss = RewardLoss.of(reward, rewards, batch.margins(), manager);
        if (forward.loadBalancing() == null) {
            return new Terms(loss, loss, rewards.toFloatArray(), 0);
        }
        NDArray objective = auxCoefficient > 0
                ? loss.add(Scalars.times(forward.loadBalancing(), auxCoefficient)) : loss;
        return new Terms(objective, loss, rewards.toFloatArray(), forward.loadBalancing().getFloat());
    }

    /** What a micro-batch's forward and backward measured (its arrays are gone with its manager). */
    private record MicroBatch(double objective, double loss, float[] rewards, double loadBalancing) {}

    /**
     * Forward and backward of weight x the micro-batch's objective, accumulating into the parameters' gradients; with
     * {@code checkpointing} layer by layer ({@link DecoderBackward}), the reward loss being its head.
     */
    private static MicroBatch backward(CausalLm model, NDArray head, Recipe.Reward reward, RewardBatch batch,
            double auxCoefficient, double weight, boolean checkpointing, long dropoutSeed, NDManager manager) {
        MicroBatch[] measured = new MicroBatch[1];
        double loadBalancing = DecoderBackward.run(model, batch.pairs().rows(), (states, headManager) -> {
            NDArray rewards = RewardHead.rewards(states, batch.positions(), head, headManager);
            NDArray loss = RewardLoss.of(reward, rewards, batch.margins(), headManager);
            measured[0] = new MicroBatch(loss.getFloat(), loss.getFloat(), rewards.toFloatArray(), 0);
            return Scalars.times(loss, weight);
        }, auxCoefficient * weight, checkpointing, dropoutSeed, manager);
        MicroBatch terms = measured[0];
        boolean dense = Double.isNaN(loadBalancing);
        return new MicroBatch(terms.loss() + (dense ? 0 : auxCoefficient * loadBalancing), terms.loss(),
                terms.rewards(), dense ? 0 : loadBalancing);
    }

    /**
     * What one reward step measured, at the weights before its update.
     *
     * @param loss the step objective (mean of the micro-batches' objectives)
     * @param loadBalancing the router loss averaged over micro-batches, before its coefficient (0 for a dense model)
     * @param rewardMetrics TRL's metrics of the step's micro-batches
     */
    public record Measured(double loss, double loadBalancing, RewardMetrics rewardMetrics, long tokens)
            implements Objective.Measured {
        @Override
        public Map<String, Object> metrics() {
            Map<String, Object> values = new LinkedHashMap<>(rewardMetrics.values());
            values.put("aux_loss", loadBalancing);
            return values;
        }

        @Override
        public String figures() {
            return String.format(Locale.ROOT, "  acc %.2f  margin %.3f", rewardMetrics.accuracy(),
                    rewardMetrics.margin());
        }
    }

    /** Per micro-batch, backward of its objective x loss scale / micro-batches, into the parameters' gradients. */
    public static Measured gradients(Recipe.Reward reward, NDArray head, List<RewardBatch> batches,
            StepContext context) {
        RewardMetrics metrics = new RewardMetrics();
        double weight = context.scaler().scale() / batches.size();
        double loss = 0;
        double loadBalancing = 0;
        long tokens = 0;
        for (int j = 0; j < batches.size(); j++) {
            RewardBatch batch = batches.get(j);
            MicroBatch measured = backward(context.model(), head, reward, batch, context.auxCoefficient(), weight,
                    context.gradientCheckpointing(), context.dropoutSeed() + j, context.manager());
            loss += measured.objective() / batches.size();
            loadBalancing += measured.loadBalancing() / batches.size();
            metrics.add(measured.rewards(), measured.loss());
            tokens += batch.pairs().realTokens();
        }
        return new Measured(loss, loadBalancing, metrics, tokens);
    }
}
