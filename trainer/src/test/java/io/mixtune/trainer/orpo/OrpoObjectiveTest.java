package io.mixtune.trainer.orpo;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDManager;
import io.mixtune.data.dataset.PreferenceDataset;
import io.mixtune.trainer.dpo.DpoRecipe;
import io.mixtune.trainer.dpo.PreferenceBatch;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.run.TrainingModel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * ORPO's evaluation on the tiny Mixtral: TRL's ORPOTrainer and CPOTrainer add aux_loss_coef x the router loss to the
 * loss in get_batch_loss_metrics whatever train_eval is, so their eval_loss (prediction_step) holds the router term.
 */
class OrpoObjectiveTest {
    @Test
    void evalLossHoldsTheRouterTermAsTrl(@TempDir Path dir) throws Exception {
        Path pairs = dir.resolve("pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(pairs, lines.limit(4).toList());
        }
        Recipe recipe = RecipeReader.read(Path.of("../recipes/quickstart-orpo.yaml"), List.of(
                "model.preset=tiny-mixtral", "data.files=[" + pairs + "]", "data.validation_ratio=0.5",
                "train.micro_batch_size=2", "output_dir=" + dir.resolve("out"))).recipe();
        PreferenceDataset dataset = DpoRecipe.loadPairs(recipe);
        try (TrainingModel model = TrainingModel.load(recipe, note -> { })) {
            double coefficient = recipe.train().routerAuxCoefficient(model.model().config());
            assertTrue(coefficient > 0, "the tiny Mixtral with train.router_aux_loss on");
            OrpoObjective objective = new OrpoObjective(recipe, model, dataset.stages().get(0),
                    dataset.validation());
            double evalLoss = objective.evaluate().get("eval_loss").doubleValue();

            OrpoLoss.Method method = OrpoLoss.Method.of(recipe);
            double lossTimesPairs = 0;
            double routerTimesPairs = 0;
            int count = 0;
            for (PreferenceBatch batch : OrpoObjective.inOrder(method, dataset.validation(),
                    recipe.train().microBatchSize(), model.model().config().eosTokenId())) {
                try (NDManager manager = model.manager().newSubManager()) {
                    OrpoStep.Terms terms = OrpoStep.of(model.model(), method, batch, coefficient, manager);
                    lossTimesPairs += terms.objective().getFloat() * batch.pairs();
                    routerTimesPairs += coefficient * terms.loadBalancing() * batch.pairs();
                    count += batch.pairs();
                }
            }
            assertTrue(routerTimesPairs / count > 1e-4, "a router term to see: " + routerTimesPairs / count);
            assertEquals(lossTimesPairs / count, evalLoss, 1e-6, "eval_loss: the mean over the validation pairs of "
                    + "the loss plus the router coefficient x the router loss");
        }
    }
}
