package io.mixtune.trainer.plan;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.model.config.ModelPreset;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.junit.jupiter.api.Test;

/**
 * What the GPU recipes need, from the plan alone (shapes, nothing loaded): Firefly's Mixtral-8x7B QLoRA (1 x 1024
 * tokens, fp16, checkpointing) on a 32 GB card with at least 1.25 GiB to spare, and Mistral-7B QLoRA at 1 x 2048
 * tokens on a 16 GB card. Both hold because a recomputed layer keeps one dequantized NF4 weight at a time
 * (RecomputedWeights) and the LoRA and softmax intermediates that PyTorch would free are freed. The float32
 * embeddings and residual stream (PEFT's QLoRA layout) cost the Mixtral 0.57 GiB of the 1.94 it had spare before.
 */
class GpuPlanGoalsTest {
    private static final double GIB = 1L << 30;

    @Test
    void mixtral8x7bQloraFitsA32GbGpuWithHeadroom() {
        MemoryPlan plan = plan("mixtral-8x7b-qlora-sft.yaml");
        assertEquals(MemoryPlan.Device.GPU, plan.setup().device());
        assertEquals(1024, plan.setup().length());
        double headroom = 32 - plan.total() / GIB;
        System.out.printf(Locale.ROOT, "mixtral-8x7b-qlora-sft: %.2f GiB, 32 GB headroom %+.2f GiB%n",
                plan.total() / GIB, headroom);
        assertTrue(headroom >= 1.25, "headroom on 32 GB " + headroom + " GiB");
    }

    @Test
    void mistral7bQloraAt2048TokensFitsA16GbGpu() {
        MemoryPlan plan = plan("mistral-7b-qlora-sft.yaml", "train.micro_batch_size=1", "model.device=gpu");
        assertEquals(1, plan.setup().rows());
        assertEquals(2048, plan.setup().length());
        assertEquals(2, plan.setup().computeBytes()); // fp16 on a GPU
        double headroom = 16 - plan.total() / GIB;
        System.out.printf(Locale.ROOT, "mistral-7b-qlora-sft at 1 x 2048: %.2f GiB, 16 GB headroom %+.2f GiB%n",
                plan.total() / GIB, headroom);
        assertTrue(headroom >= 0, "headroom on 16 GB " + headroom + " GiB");
    }

    private static MemoryPlan plan(String recipeName, String... sets) {
        List<String> overrides = new ArrayList<>(List.of(sets));
        overrides.add("data.files=[" + Path.of("../data/samples/chats.jsonl").toAbsolutePath() + "]");
        Recipe recipe = RecipeReader.read(Path.of("../recipes", recipeName), overrides).recipe();
        return MemoryPlan.predict(MemoryPlan.Setup.of(recipe, ModelPreset.load(recipe.model().preset()),
                MemoryPlan.Setup.worstCaseTargets(recipe)));
    }
}
