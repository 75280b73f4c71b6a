package io.mixtune.trainer.dpo;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import io.mixtune.trainer.recipe.Recipe;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The reference log-probs a checkpoint keeps are read back only at the ld_alpha they were summed with. */
class StageReferenceTest {
    @TempDir
    Path dir;

    private static Recipe.Dpo dpo(Double ldAlpha) {
        return new Recipe.Dpo(0.1, List.of("sigmoid"), List.of(), 0, Recipe.Dpo.DEFAULT_DISCOPOP_TAU,
                Recipe.Dpo.REVERSE_KL, Recipe.Dpo.DEFAULT_F_ALPHA_DIVERGENCE_COEF, ldAlpha, false, false, 0, List.of("1"),
                true, Recipe.Dpo.ORDER_FILE, null);
    }

    /** A reference state file as StageReference.save writes it: train log-probs, and the ld_alpha marker if any. */
    private Path state(String name, Float ldAlpha) {
        List<TensorSpec> specs = new ArrayList<>();
        Map<String, float[]> data = new TreeMap<>();
        for (String side : List.of("train.chosen", "train.rejected")) {
            specs.add(new TensorSpec(side, DType.F32, new long[] {2}));
            data.put(side, new float[] {-3, -4});
        }
        if (ldAlpha != null) {
            specs.add(new TensorSpec(StageReference.LD_ALPHA, DType.F32, new long[] {1}));
            data.put(StageReference.LD_ALPHA, new float[] {ldAlpha});
        }
        Path file = dir.resolve(name);
        SafetensorsWriter.writeFile(file, specs, spec -> data.get(spec.name()));
        return file;
    }

    @Test
    void keptLogProbsAreReadOnlyAtTheLdAlphaTheyWereSummedWith() {
        Path plain = state("plain.safetensors", null); // as every run wrote before ld_alpha existed
        Path half = state("half.safetensors", 0.5f);
        try (SafetensorsReader reader = SafetensorsReader.open(plain)) {
            assertDoesNotThrow(() -> StageReference.checkLdAlpha(dpo(null), reader, plain));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> StageReference.checkLdAlpha(dpo(0.5), reader, plain));
            assertTrue(e.getMessage().contains("no ld_alpha") && e.getMessage().contains("dpo.ld_alpha 0.5"),
                    e.getMessage());
        }
        try (SafetensorsReader reader = SafetensorsReader.open(half)) {
            assertDoesNotThrow(() -> StageReference.checkLdAlpha(dpo(0.5), reader, half));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> StageReference.checkLdAlpha(dpo(null), reader, half));
            assertTrue(e.getMessage().contains("ld_alpha 0.5") && e.getMessage().contains("dpo.ld_alpha null"),
                    e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> StageReference.checkLdAlpha(dpo(0.25), reader, half));
        }
    }
}
