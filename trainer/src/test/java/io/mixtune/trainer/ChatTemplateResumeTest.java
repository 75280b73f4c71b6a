package io.mixtune.trainer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.trainer.run.CachedPreset;
import io.mixtune.trainer.run.TrainingOutputs;
import io.mixtune.trainer.run.TrainingResult;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * With data.template auto the template comes from the model's files (chat_template.jinja, else tokenizer_config.json),
 * which no recipe key or data hash covers: a run records the template it tokenized with (output_dir/
 * chat-template.jinja) and --resume refuses another. A run started before that record existed is held to the template
 * mixtune read then (no chat_template.jinja): it resumes while the folder gives that one, and is refused where the
 * folder's chat_template.jinja, read since 2026-12-07, gives another. Before, both resumed and tokenized anew with
 * the other template, silently (review of 2026-12-07).
 */
class ChatTemplateResumeTest {
    private static final String CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
            + "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    @TempDir
    Path dir;

    private Path recipe(Path model, String out) throws Exception {
        return Files.writeString(dir.resolve(out + ".yaml"), """
                model:
                  path: %s
                lora:
                  r: 4
                  alpha: 8
                  targets: [q_proj, v_proj]
                data:
                  files: [data/samples/chats.jsonl]
                  template: auto
                  max_seq_len: 64
                train:
                  max_steps: 2
                  save_every: 1
                output_dir: %s
                """.formatted(model, dir.resolve(out)));
    }

    @Test
    void resumeRefusesAnotherTemplateFromTheModelsFiles() throws Exception {
        Path model = dir.resolve("model");
        CachedPreset.ensure("tiny-mistral", model);
        Path recipe = recipe(model, "out");
        assertTrue(TrainingApiTest.runCancelledAfter(Training.load(recipe), 1).cancelled());
        assertTrue(Files.readString(dir.resolve("out").resolve(TrainingOutputs.CHAT_TEMPLATE_FILE))
                .contains("[INST]"), "the run records the mistral template its preset folder gives");

        Files.writeString(model.resolve("chat_template.jinja"), CHATML);
        Refusal refused = assertThrows(Refusal.class, () -> Training.load(recipe).resume().run());
        assertTrue(refused.getMessage().contains("the chat template the data are tokenized with is not the one the "
                + "run started with"), refused.getMessage());

        // A run from before the record: held to what mixtune read then, the folder without chat_template.jinja.
        Files.delete(dir.resolve("out").resolve(TrainingOutputs.CHAT_TEMPLATE_FILE));
        refused = assertThrows(Refusal.class, () -> Training.load(recipe).resume().run());
        assertTrue(refused.getMessage().contains("the model's chat_template.jinja, which mixtune reads since "
                + "2026-12-07"), refused.getMessage());
        Files.delete(model.resolve("chat_template.jinja"));
        TrainingResult resumed = Training.load(recipe).resume().run();
        assertFalse(resumed.cancelled());
        assertEquals(2L, resumed.steps());
    }
}
