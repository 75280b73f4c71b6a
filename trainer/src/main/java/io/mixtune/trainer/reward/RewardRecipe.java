package io.mixtune.trainer.reward;

import ai.djl.ndarray.NDArray;
import io.mixtune.data.dataset.PreferenceDataset;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.trainer.dpo.DpoRecipe;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeValueException;
import io.mixtune.trainer.run.EpochSteps;
import io.mixtune.trainer.run.MethodRecipe;
import io.mixtune.trainer.run.ShuffledEpochs;
import io.mixtune.trainer.run.SingleStageRun;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingModel;
import io.mixtune.trainer.run.TrainingResult;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.BooleanSupplier;

/**
 * A reward model (Ouyang et al. 2022; TRL's RewardTrainer) with (Q)LoRA, read top to bottom: {@link #setup} tokenizes
 * the preference pairs as DPO does, loads the model, attaches the adapter and a score head trained in full; {@link
 * #train} runs {@link TrainingLoop} over its steps. The adapter it writes is a PEFT sequence classifier's (task_type
 * SEQ_CLS, the head under modules_to_save), so transformers' MistralForSequenceClassification + PEFT computes the same
 * rewards.
 */
public final class RewardRecipe implements MethodRecipe {
    private final Recipe recipe;
    private final TrainingListener listener;
    private final TrainingModel model;
    private final NDArray head;
    private final List<PreferenceSample> pairs;
    private final List<PreferenceSample> validation;
    private final long totalSteps;

    private RewardRecipe(Recipe recipe, TrainingListener listener) {
        this.recipe = recipe;
        this.listener = listener;
        Recipe.Train train = recipe.train();
        TrainingModel.check(recipe);
        PreferenceDataset dataset = DpoRecipe.loadPairs(recipe);
        List<PreferenceSample> loaded = dataset.stages().get(0);
        pairs = LabelNoise.flip(loaded, recipe.reward().labelNoise(), train.seed());
        validation = dataset.validation();
        if (recipe.reward().labelNoise() > 0) {
            listener.onNote(String.format(Locale.ROOT, "label noise: chosen and rejected swapped in %d of %d training "
                    + "pairs (reward.label_noise %s, drawn from train.seed %d); validation pairs as given",
                    Math.round(recipe.reward().labelNoise() * loaded.size()), loaded.size(),
                    recipe.reward().labelNoise(), train.seed()));
        }
        if (recipe.reward().margin()) {
            pairs.stream().filter(p -> p.margin() == null).findFirst().ifPresent(p -> {
                throw new RecipeValueException("reward.margin", "is true but " + p.source() + " has no score_chosen "
                        + "and score_rejected: every pair needs both for a margin");
            });
        }

        // model.adapter may be an SFT adapter (the head starts fresh) or a reward model's (its head goes on training:
        // WARM's members start from one linear-probed head).
        boolean fromRewardModel = recipe.model().adapter() != null
                && PeftAdapter.isRewardModel(Path.of(recipe.model().adapter(), PeftAdapter.CONFIG_FILE));
        model = TrainingModel.load(recipe, listener::onNote,
                config -> fromRewardModel ? RewardHead.modulesToSave(config) : Map.of());
        if (!fromRewardModel) {
            model.lora().addModuleToSave(TrainingModel.ADAPTER_NAME, RewardHead.MODULE,
                    RewardHead.initial(model.model().config(), train.seed(), model.manager()));
        }
        head = model.lora().modulesToSave(TrainingModel.ADAPTER_NAME).get(RewardHead.MODULE);
        totalSteps = new EpochSteps(ShuffledEpochs.microBatchesPerEpoch(pairs.size(), train.microBatchSize()),
                train.gradientAccumulation()).stageSteps(train);
    }

    /** @param listener receives the notes of setting up (warnings) and, later, the run's events */
    public static RewardRecipe setup(Recipe recipe, TrainingListener listener) {
        return new RewardRecipe(recipe, listener);
    }

    @Override
    public long totalSteps() {
        return totalSteps;
    }

    @Override
    public TrainingResult train(Path resumeFrom, BooleanSupplier cancelled) {
        return new SingleStageRun(recipe, model, listener, totalSteps).train(resumeFrom, cancelled,
                this::describePlan, start -> new RewardObjective(recipe, model, head, pairs, validation));
    }

    private void describePlan(Path outputDir) {
        listener.onNote(model.describe(recipe));
        Recipe.Reward reward = recipe.reward();
        listener.onNote(String.format(Locale.ROOT, "reward model: score head [1, %d] + LoRA, loss -log sigmoid(r_chosen "
                + "- r_rejected%s)%s; %d training pairs, %d validation pairs", model.model().config().hiddenSize(),
                reward.margin() ? " - margin" : "", reward.centerRewardsCoefficient() == null ? ""
                        : " + " + reward.centerRewardsCoefficient() + " x mean((r_chosen + r_rejected)^2)",
                pairs.size(), validation.size()));
        listener.onNote(SingleStageRun.describeSteps(recipe, totalSteps, " pairs", outputDir));
    }

    @Override
    public void close() {
        model.close();
    }
}
