package io.mixtune.trainer.run;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.data.dataset.SampleCache;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class TrainingDataTest {
    /**
     * A preset run tokenizes before it writes output_dir/base-model (the data first), with the bundled tokenizer; the
     * copy base-model/ then holds for transformers declares its special tokens, other bytes. A resumed run read the
     * copy, so its data cache key differed and it tokenized the same data again (quickstart: 1.5 s of a 7 s start);
     * the preset's tokenizer is the bundled one whether or not base-model/ is written, one key for both.
     */
    @Test
    void aPresetRunKeysItsDataCacheAlikeBeforeAndAfterItsBaseModelIsWritten(@TempDir Path dir) {
        Recipe recipe = RecipeReader.read(Path.of("../recipes/quickstart.yaml"),
                List.of("output_dir=" + dir.resolve("out"), "model.preset=tiny-mistral")).recipe();
        String fresh = SampleCache.key(recipe.data(), TrainingData.tokenizer(recipe), recipe.train().seed());
        CachedPreset.ensure(recipe.model().preset(), TrainingData.baseModelDir(recipe));
        assertTrue(Files.isRegularFile(TrainingData.baseModelDir(recipe).resolve("tokenizer.json")));
        assertEquals(fresh, SampleCache.key(recipe.data(), TrainingData.tokenizer(recipe), recipe.train().seed()));
    }
}
