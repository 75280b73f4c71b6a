package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.trainer.run.CachedPreset;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * lora.use_dora where the run could not do what it says, refused by validate (and so before train's step 1): beside
 * WARM, whose closing average refuses DoRA adapters only after every member has trained, and beside a plain LoRA
 * model.adapter, whose own config decides what trains (plain LoRA, while recipe.yaml said use_dora). Both passed
 * validation before (review of 2026-12-07).
 */
class DoraRecipeRefusalTest {
    @TempDir
    Path dir;

    @Test
    void warmWithDoraIsRefusedBeforeAnyMemberTrains() {
        MixtuneCliTest.Result validate = MixtuneCliTest.run("validate", "--recipe", "../recipes/warm-reward.yaml",
                "--set", "lora.use_dora=true", "--set", "lora.targets=[q_proj, v_proj]", "--set",
                "output_dir=" + dir.resolve("out"));
        assertEquals(2, validate.code(), validate.err());
        assertTrue(validate.err().contains("lora.use_dora: WARM averages its members' adapters, and DoRA adapters"),
                validate.err());
    }

    @Test
    void useDoraBesideAPlainLoraModelAdapterIsRefused() throws Exception {
        Path model = dir.resolve("model");
        CachedPreset.ensure("tiny-mistral", model);
        MixtuneCliTest.Result init = MixtuneCliTest.run("init-adapter", "--model", model.toString(), "--out",
                dir.resolve("lora").toString(), "--targets", "q_proj,v_proj");
        assertEquals(0, init.code(), init.err());
        Path recipe = Files.writeString(dir.resolve("r.yaml"), """
                model:
                  path: %s
                  adapter: %s
                lora:
                  use_dora: true
                data:
                  files: [../data/samples/chats.jsonl]
                output_dir: %s
                """.formatted(model, dir.resolve("lora"), dir.resolve("out")));
        MixtuneCliTest.Result validate = MixtuneCliTest.run("validate", "--recipe", recipe.toString());
        assertEquals(2, validate.code(), validate.err());
        assertTrue(validate.err().contains("r.yaml:5: lora.use_dora: is true, but model.adapter"), validate.err());
    }
}
