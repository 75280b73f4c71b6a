package io.mixtune.trainer.distill;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.ndarray.types.DataType;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.trainer.Refusal;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeException;
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
 * preset student; one piece renamed, or another vocab_size (naming both models), is refused (validate, plan and train
 * run this check).
 */
class DistillTeacherTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @Test
    void aPresetFolderMixtuneWroteTeachesThePresetStudentAndAnotherVocabularyOrVocabSizeIsRefused(@TempDir Path dir)
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

        ObjectNode config = (ObjectNode) JSON.readTree(teacher.resolve("config.json").toFile());
        config.put("vocab_size", 32768); // the same tokenizer, a larger embedding
        Path wider = Files.createDirectories(dir.resolve("wider"));
        JSON.writeValue(wider.resolve("config.json").toFile(), config);
        Files.copy(teacher.resolve("tokenizer.json"), wider.resolve("tokenizer.json"));
        refused = assertThrows(RecipeValueException.class, () -> DistillTeacher.check(recipe(dir, wider)));
        assertTrue(refused.getMessage().contains("distillation.teacher_model_name_or_path") && refused.getMessage()
                .contains("has vocab_size 32768") && refused.getMessage().contains("preset tiny-mistral) 32000"),
                refused.getMessage());
    }

    /** output_dir/teacher-model holding another preset, or a folder mixtune did not write: refused by the key. */
    @Test
    void aTeacherModelFolderOfAnotherPresetIsRefusedNamingTheTeachersKey(@TempDir Path dir) {
        Recipe recipe = RecipeReader.read(Path.of("../recipes/quickstart-distill.yaml"), List.of(
                "data.files=[" + Path.of("../data/samples/chats.jsonl").toAbsolutePath() + "]",
                "output_dir=" + dir.resolve("out"))).recipe();
        Path teacherDir = DistillTeacher.dir(recipe);
        CachedPreset.ensure("tiny-mistral", teacherDir);
        Refusal refused = assertThrows(Refusal.class, () -> DistillTeacher.load(recipe, Device.cpu(),
                DataType.FLOAT32));
        assertTrue(refused.getMessage().contains("distillation.teacher_preset is tiny-mixtral")
                && !refused.getMessage().contains("model.preset"), refused.getMessage());
    }

    /** The teacher's keys (null by default) set for another method would be ignored: refused, as the teacher's. */
    @Test
    void teacherAdapterOrQuantizeSetForAnotherMethodIsRefused() {
        for (String set : List.of("distillation.teacher_adapter=out/quickstart/adapter",
                "distillation.teacher_quantize=nf4")) {
            RecipeException refused = assertThrows(RecipeException.class, () -> RecipeReader.read(
                    Path.of("../recipes/quickstart-distill.yaml"), List.of("train.method=sft",
                            "distillation.teacher_preset=null", set)));
            String key = set.substring(0, set.indexOf('='));
            assertTrue(refused.getMessage().contains(key + ": ") && refused.getMessage().contains(
                    "only train.method: distillation reads"), refused.getMessage());
        }
    }

    private static Recipe recipe(Path dir, Path teacher) {
        return RecipeReader.read(Path.of("../recipes/quickstart-distill.yaml"), List.of(
                "data.files=[" + Path.of("../data/samples/chats.jsonl").toAbsolutePath() + "]",
                "output_dir=" + dir.resolve("out"), "distillation.teacher_preset=null",
                "distillation.teacher_model_name_or_path=" + teacher)).recipe();
    }
}
