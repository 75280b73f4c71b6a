package io.mixtune.trainer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.run.TrainingResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * lora.use_dora end to end on TrainingApiTest's run (NF4 base, dropout, EMA and LaWA) on the tiny Mistral, with
 * DoRA on q, v, down_proj and the lm_head and gradient checkpointing: the magnitudes train beside A and B, are written
 * under PEFT's keys with use_dora true, and a run cancelled then resumed ends with the uninterrupted run's adapters,
 * bit for bit.
 */
class DoraTrainingTest {
    private static final String[] DORA = {"model.preset=tiny-mistral", "lora.use_dora=true",
        "lora.targets=[q_proj, v_proj, down_proj, lm_head]", "train.gradient_checkpointing=true", "train.max_steps=3",
        "train.gradient_accumulation=1", "data.validation_ratio=0"};

    @TempDir
    Path dir;

    @Test
    void aDoraRunTrainsTheMagnitudesAndResumesExactly() throws Exception {
        Path whole = Files.createDirectories(dir.resolve("whole"));
        TrainingResult uninterrupted = Training.load(TrainingApiTest.recipe(whole), DORA).run();
        Path adapter = uninterrupted.adapterDir();
        assertTrue(new ObjectMapper().readTree(adapter.resolve("adapter_config.json").toFile()).get("use_dora")
                .asBoolean());
        Path cut = Files.createDirectories(dir.resolve("cut"));
        assertTrue(TrainingApiTest.runCancelledAfter(Training.load(TrainingApiTest.recipe(cut), DORA), 1).cancelled());
        try (SafetensorsReader trained = SafetensorsReader.open(adapter.resolve("adapter_model.safetensors"));
                SafetensorsReader earlier = SafetensorsReader.open(cut.resolve(
                        "out/checkpoints/step-000001/adapter/adapter_model.safetensors"))) {
            List<String> magnitudes = trained.names().stream().filter(n -> n.endsWith(".lora_magnitude_vector"))
                    .toList();
            assertEquals(2 * 3 + 1, magnitudes.size(), trained.names().toString());
            for (String name : magnitudes) {
                assertFalse(Arrays.equals(trained.readFloats(name), earlier.readFloats(name)), name + " did not train");
            }
        }
        TrainingResult resumed = Training.load(TrainingApiTest.recipe(cut), DORA).resume().run();
        for (String name : List.of("adapter", "adapter-ema", "adapter-lawa")) {
            try (SafetensorsReader a = SafetensorsReader.open(adapter.resolveSibling(name)
                    .resolve("adapter_model.safetensors"));
                    SafetensorsReader b = SafetensorsReader.open(resumed.adapterDir().resolveSibling(name)
                            .resolve("adapter_model.safetensors"))) {
                assertEquals(a.names(), b.names());
                for (String tensor : a.names()) {
                    assertArrayEquals(a.readFloats(tensor), b.readFloats(tensor), name + " " + tensor);
                }
            }
        }
    }
}
