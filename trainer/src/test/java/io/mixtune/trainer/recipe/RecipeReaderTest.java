package io.mixtune.trainer.recipe;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Recipes: defaults, includes, --set, and an error naming file:line, key and expectation for each kind of mistake. */
class RecipeReaderTest {
    @TempDir
    Path dir;

    private Path write(String name, String yaml) throws IOException {
        Path file = dir.resolve(name);
        Files.writeString(file, yaml);
        return file;
    }

    private Path chats() throws IOException {
        return write("chats.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
                + "{\"role\": \"assistant\", \"content\": \"hello\"}]}\n");
    }

    private String minimal() throws IOException {
        return "model:\n  preset: tiny-mistral\ndata:\n  files: [" + chats() + "]\noutput_dir: " + dir.resolve("out") + "\n";
    }

    private String error(Path recipe, String... sets) {
        return assertThrows(RecipeException.class, () -> RecipeReader.read(recipe, List.of(sets))).getMessage();
    }

    @Test
    void aShortRecipeGetsEveryDefault() throws IOException {
        Recipe recipe = RecipeReader.read(write("r.yaml", minimal()), List.of()).recipe();
        assertEquals("tiny-mistral", recipe.model().preset());
        assertEquals("nf4", recipe.model().quantize());
        assertEquals(16, recipe.lora().r());
        assertEquals(List.of("all-linear"), recipe.lora().targets());
        assertEquals(2048, recipe.data().maxSeqLen());
        assertEquals(2.0e-4, recipe.train().lr());
        assertEquals(1, recipe.train().epochs());
        // The resolved recipe reads back to the same recipe.
        Path resolved = write("resolved.yaml", RecipeReader.toYaml(recipe));
        assertEquals(recipe, RecipeReader.read(resolved, List.of()).recipe());
    }

    @Test
    void includesThenRecipeThenSetOverrides() throws IOException {
        write("base.yaml", "lora:\n  r: 8\n  alpha: 8\ntrain:\n  lr: 1.0e-3\n  epochs: 3\n");
        Path recipe = write("r.yaml", "include: base.yaml\n" + minimal() + "train:\n  lr: 5.0e-4\n");
        Recipe read = RecipeReader.read(recipe, List.of("train.epochs=2", "lora.targets=[q_proj, v_proj]",
                "train.lr=1e-5")).recipe();
        assertEquals(8, read.lora().r());
        assertEquals(1e-5, read.train().lr()); // YAML 1.1 reads 1e-5 as a string; a number is meant
        assertEquals(2, read.train().epochs());
        assertEquals(List.of("q_proj", "v_proj"), read.lora().targets());
        // A bundled config can be included by its path in the jar.
        Path bundled = write("b.yaml", "include: configs/recipe-defaults.yaml\n" + minimal());
        assertEquals(16, RecipeReader.read(bundled, List.of()).recipe().lora().r());
    }

    @Test
    void anUnknownKeyNamesItsLineAndTheNearestValidKey() throws IOException {
        Path recipe = write("r.yaml", minimal() + "train:\n  learning_rate: 1.0e-4\n  lr_schedule: cosine\n");
        String message = error(recipe);
        assertTrue(message.startsWith(recipe + ":7: train.learning_rate: unknown key"), message);
        String typo = error(write("t.yaml", minimal() + "train:\n  gradient_acumulation: 4\n"));
        assertTrue(typo.contains(":7: train.gradient_acumulation: unknown key (did you mean gradient_accumulation?)"),
                typo);
        String section = error(write("s.yaml", minimal() + "trian:\n  lr: 1.0e-4\n"));
        assertTrue(section.contains(":6: trian: unknown key (did you mean train?)"), section);
    }

    @Test
    void aWrongTypeOrRangeNamesTheLineAndWhatWasExpected() throws IOException {
        String type = error(write("a.yaml", minimal() + "train:\n  micro_batch_size: four\n"));
        assertTrue(type.contains("a.yaml:7: train.micro_batch_size: expected an integer, got \"four\""), type);
        String range = error(write("b.yaml", minimal() + "train:\n  lr: 2.0\n"));
        assertTrue(range.contains("b.yaml:7: train.lr: must lie in (0, 1), got 2.0"), range);
        String choice = error(write("c.yaml", minimal() + "train:\n  schedule: exponential\n"));
        assertTrue(choice.contains("c.yaml:7: train.schedule: expected one of constant, linear, cosine, got "
                + "\"exponential\""), choice);
        String target = error(write("d.yaml", minimal() + "lora:\n  targets: [q_proj, qkv]\n"));
        assertTrue(target.contains("d.yaml:7: lora.targets: unknown lora target \"qkv\""), target);
        String data = error(write("e.yaml", minimal().replace("data:\n", "data:\n  max_seq_len: 1\n")));
        assertTrue(data.contains("e.yaml:4: data.max_seq_len: must be at least 2, got 1"), data);
        String set = error(write("f.yaml", minimal()), "train.epochs=zero");
        assertTrue(set.contains("--set train.epochs=zero: train.epochs: expected an integer"), set);
    }

    @Test
    void aMissingFileIsNamedWithTheLineThatNamesIt() throws IOException {
        Path recipe = write("r.yaml", "model:\n  preset: tiny-mistral\ndata:\n  files:\n    - " + chats() + "\n"
                + "    - missing.jsonl\noutput_dir: out\n");
        String message = error(recipe);
        assertTrue(message.contains("r.yaml:6: data.files[1]: no such file missing.jsonl"), message);
        String model = error(write("m.yaml", minimal().replace("preset: tiny-mistral", "path: /nowhere")));
        assertTrue(model.contains("m.yaml:2: model.path: no Hugging Face checkpoint at /nowhere"), model);
        String both = error(write("b.yaml", minimal().replace("preset: tiny-mistral",
                "preset: tiny-mistral\n  path: " + dir)));
        assertTrue(both.contains("model.path: give exactly one of model.path"), both);
    }

    @Test
    void pathAndPresetAreOneChoiceAcrossLayers() throws IOException {
        String unknown = error(write("u.yaml", minimal().replace("tiny-mistral", "tiny-mistrel")));
        assertTrue(unknown.contains("u.yaml:2: model.preset: no preset named \"tiny-mistrel\" (did you mean "
                + "tiny-mistral?)"), unknown);
        // A recipe naming a path over an included preset, and a --set of the preset over that path.
        Path model = Files.createDirectories(dir.resolve("model"));
        Files.writeString(model.resolve("config.json"), "{}");
        write("base.yaml", minimal());
        Path onPath = write("p.yaml", "include: base.yaml\nmodel:\n  path: " + model + "\n");
        Recipe read = RecipeReader.read(onPath, List.of()).recipe();
        assertEquals(model.toString(), read.model().path());
        assertEquals(null, read.model().preset());
        Recipe back = RecipeReader.read(onPath, List.of("model.preset=tiny-mixtral")).recipe();
        assertEquals("tiny-mixtral", back.model().preset());
        assertEquals(null, back.model().path());
    }

    @Test
    void badYamlAndMissingIncludesAreNamed() throws IOException {
        String yaml = error(write("y.yaml", "model:\n  preset: [unclosed\n"));
        assertTrue(yaml.contains("y.yaml:") && yaml.contains("not valid YAML"), yaml);
        String include = error(write("i.yaml", "include: nothere.yaml\n" + minimal()));
        assertTrue(include.contains("i.yaml:1: include: no file"), include);
        String twice = error(write("d.yaml", minimal() + "output_dir: x\n"));
        assertTrue(twice.contains("d.yaml:6: key output_dir is given twice"), twice);
    }
}
