package io.mixtune.trainer.distill;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.recipe.RecipeValueException;
import io.mixtune.trainer.run.CachedPreset;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The teacher's tokenizer check compares what the divergence depends on, the token behind each id: a teacher folder
 * mixtune wrote for a preset (its tokenizer.json saved for transformers, the special tokens declared) teaches the
 * preset student, and one piece renamed is still refused.
 */
class DistillTeacherTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @Test
    void aPresetFolderMixtuneWroteTeachesThePresetStudentAndAnotherVocabularyIsRefused(@TempDir Path dir)
            throws Exception {
        Path teacher = dir.resolve("base-model");
        CachedPreset.ensure("tiny-mixtral", teacher); // as the SFT quickstart writes out/quickstart/base-model
        assertDoesNotThrow(() -> DistillTeacher.check(recipe(dir, teacher)));

        ObjectNode tokenizer = (ObjectNode) JSON.readTree(teacher.resolve("tokenizer.json").toFile());
        ObjectNode vocab = (ObjectNode) tokenizer.get("model").get("vocab");
        vocab.set("▁zebra", vocab.remove("▁the")); // one piece renamed: same size, another token at its id
        Path other = Files.createDirectories(dir.resolve("other"));
        Files.copy(teacher.resolve("config.json"), other.resolve("config.json"));
        JSON.writeValue(other.resolve("tokenizer.json").toFile(), tokenizer);
        RecipeValueException refused = assertThrows(RecipeValueException.class,
                () -> DistillTeacher.check(recipe(dir, other)));
        assertTrue(refused.getMessage().contains("differs from the student's"), refused.getMessage());
    }

    private static Recipe recipe(Path dir, Path teacher) {
        return RecipeReader.read(Path.of("../recipes/quickstart-distill.yaml"), List.of(
                "data.files=[" + Path.of("../data/samples/chats.jsonl").toAbsolutePath() + "]",
                "output_dir=" + dir.resolve("out"), "distillation.teacher_preset=null",
                "distillation.teacher_model_name_or_path=" + teacher)).recipe();
    }
}
