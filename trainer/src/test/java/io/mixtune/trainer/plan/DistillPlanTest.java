package io.mixtune.trainer.plan;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.mixtune.model.config.ModelPreset;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The plan of a distillation run (recipes/quickstart-distill.yaml): an on-policy row is its prompt (at most
 * max_seq_len - 1 tokens, before the first target) and the student's completion of up to max_completion_length tokens,
 * so the plan's rows are that long, as GRPO's; without on-policy micro-batches (lmbda 0) they are the data's.
 */
class DistillPlanTest {
    @Test
    void onPolicyRowsHoldTheLongestPromptAndTheLongestCompletion() {
        MemoryPlan.Setup onPolicy = setup("data.max_seq_len=48", "distillation.max_completion_length=64");
        assertEquals(47 + 64, onPolicy.length());
        assertEquals(4L * 64, onPolicy.targets()); // an on-policy row's targets are its completion
        MemoryPlan.Setup longData = setup("data.max_seq_len=48", "distillation.max_completion_length=16");
        assertEquals(47 + 16, longData.length());
        assertEquals(4L * 47, longData.targets()); // an off-policy row's, the data's completion
        MemoryPlan.Setup offPolicy = setup("data.max_seq_len=48", "distillation.max_completion_length=64",
                "distillation.lmbda=0");
        assertEquals(48, offPolicy.length());
        assertEquals(4L * 47, offPolicy.targets());
    }

    private static MemoryPlan.Setup setup(String... sets) {
        List<String> overrides = new ArrayList<>(List.of(sets));
        overrides.add("data.files=[" + Path.of("../data/samples/chats.jsonl").toAbsolutePath() + "]");
        Recipe recipe = RecipeReader.read(Path.of("../recipes/quickstart-distill.yaml"), overrides).recipe();
        return MemoryPlan.Setup.of(recipe, ModelPreset.load(recipe.model().preset()),
                MemoryPlan.Setup.worstCaseTargets(recipe));
    }
}
