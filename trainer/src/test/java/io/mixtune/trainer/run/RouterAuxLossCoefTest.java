package io.mixtune.trainer.run;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.trainer.Training;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * train.router_aux_loss_coef reaches the loss. Every method takes its router coefficient from the one
 * {@link Recipe.Train#routerAuxCoefficient} (the loop's StepContext for training, DPO's, KTO's and ORPO's evaluations):
 * its values are held here, and one SFT step on the tiny Mixtral shows the loss is the cross-entropy + coefficient x
 * the logged aux_loss, at the same starting weights (dropout off) for the coefficients 0 (no term, no aux_loss logged,
 * as TRL's trainers with router_aux_loss_coef 0) and 0.5.
 */
class RouterAuxLossCoefTest {
    private static final Path CHATS = Path.of("../data/samples/chats.jsonl").toAbsolutePath().normalize();

    @Test
    void theCoefficientIsTheKeysElseTheConfigsOnAMixtralWithTheRouterLossOn(@TempDir Path dir) {
        ModelConfig mixtral = ModelPreset.load("tiny-mixtral");
        assertEquals(0.02, mixtral.routerAuxLossCoef(), "the preset's config.json");
        assertEquals(0.02, train(dir).routerAuxCoefficient(mixtral), "unset: the config's");
        assertEquals(0.5, train(dir, "train.router_aux_loss_coef=0.5").routerAuxCoefficient(mixtral));
        assertEquals(0.0, train(dir, "train.router_aux_loss_coef=0").routerAuxCoefficient(mixtral));
        assertEquals(0.0, train(dir, "train.router_aux_loss=false").routerAuxCoefficient(mixtral));
        assertEquals(0.0, train(dir, "train.router_aux_loss_coef=0.5").routerAuxCoefficient(
                ModelPreset.load("tiny-mistral")), "a dense model has no router loss");
    }

    private static Recipe.Train train(Path dir, String... sets) {
        List<String> overrides = new ArrayList<>(List.of("model.preset=tiny-mixtral", "data.files=[" + CHATS + "]",
                "output_dir=" + dir));
        overrides.addAll(List.of(sets));
        return RecipeReader.read(Path.of("../recipes/quickstart.yaml"), overrides).recipe().train();
    }

    @Test
    void theLossIsTheCrossEntropyPlusTheCoefficientTimesTheLoggedRouterLoss(@TempDir Path dir) throws IOException {
        Path chats = dir.resolve("chats.jsonl");
        try (Stream<String> lines = Files.lines(CHATS)) {
            Files.write(chats, lines.limit(2).toList());
        }
        Map<String, Object> without = firstStep(chats, dir.resolve("zero"), "0");
        assertFalse(without.containsKey("aux_loss"), "coefficient 0: no router term, no aux_loss: " + without);
        Map<String, Object> with = firstStep(chats, dir.resolve("half"), "0.5");
        double aux = ((Number) with.get("aux_loss")).doubleValue();
        assertTrue(aux > 0.5, "a load-balancing loss to weigh (1 for a uniform router): " + aux);
        assertEquals(((Number) without.get("loss")).doubleValue() + 0.5 * aux,
                ((Number) with.get("loss")).doubleValue(), 1e-6);
    }

    /**
     * Distillation adds no router term (TRL's DistillationTrainer's loss is the divergence alone), so a Mixtral student
     * with router_aux_loss on (its default) logs no aux_loss: the step's record held a null aux_loss before.
     */
    @Test
    void aMixtralStudentsDistillationStepLogsNoRouterLoss(@TempDir Path dir) {
        Map<String, Object> step = onlyStep(Training.load(Path.of("../recipes/quickstart-distill.yaml"),
                "model.preset=tiny-mixtral", "data.files=[" + CHATS + "]", "data.validation_ratio=0",
                "data.max_seq_len=48", "distillation.lmbda=0", "train.micro_batch_size=2", "train.max_steps=1",
                "train.eval_every=0", "train.save_every=0", "output_dir=" + dir.resolve("out")));
        assertFalse(step.containsKey("aux_loss"), step.toString());
    }

    /**
     * Reward modelling adds no router term: TRL 1.13's RewardTrainer takes the loss of transformers'
     * MixtralForSequenceClassification (GenericForSequenceClassification), which computes no load-balancing loss, so
     * a Mixtral reward model's step loss is the pairs' -log sigmoid alone and no aux_loss is logged.
     */
    @Test
    void aMixtralRewardModelsStepAddsNoRouterLoss(@TempDir Path dir) {
        List<Map<String, Object>> steps = new ArrayList<>();
        for (String routerAuxLoss : new String[] {"true", "false"}) {
            steps.add(onlyStep(Training.load(Path.of("../recipes/quickstart-reward.yaml"), "model.preset=tiny-mixtral",
                    "model.quantize=none", "data.validation_ratio=0", "train.micro_batch_size=2",
                    "train.gradient_accumulation=1", "train.max_steps=1", "train.eval_every=0", "train.save_every=0",
                    "train.router_aux_loss=" + routerAuxLoss, "output_dir=" + dir.resolve("out-" + routerAuxLoss))));
        }
        assertFalse(steps.get(0).containsKey("aux_loss"), steps.get(0).toString());
        assertEquals(((Number) steps.get(1).get("loss")).doubleValue(), ((Number) steps.get(0).get("loss")).doubleValue(),
                0.0, "the router_aux_loss default changes nothing in a reward model's loss");
    }

    private static Map<String, Object> firstStep(Path chats, Path out, String coefficient) {
        return onlyStep(Training.load(Path.of("../recipes/quickstart.yaml"), "model.quantize=none",
                "data.files=[" + chats + "]", "data.validation_ratio=0", "data.max_seq_len=64",
                "train.micro_batch_size=2", "train.max_steps=1", "train.eval_every=0", "train.save_every=0",
                "train.router_aux_loss_coef=" + coefficient, "output_dir=" + out));
    }

    /** The record of a one-step run's step. */
    private static Map<String, Object> onlyStep(Training training) {
        List<Map<String, Object>> steps = new ArrayList<>();
        training.listener(new TrainingListener() {
            @Override
            public void onStep(StepEnded step) {
                steps.add(step.metrics());
            }
        }).run();
        assertEquals(1, steps.size());
        return steps.get(0);
    }
}
