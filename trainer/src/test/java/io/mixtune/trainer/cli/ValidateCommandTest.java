package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.trainer.cli.MixtuneCliTest.Result;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** `mixtune validate` says ok only where `train` gets to step 1, and says everything that is wrong at once. */
class ValidateCommandTest {
    private static final String CHAT = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
            + "{\"role\": \"assistant\", \"content\": \"Hello!\"}]}";

    @TempDir
    Path dir;

    /** A recipe on the tiny Mistral whose data.files (line 4) is {@code data}. */
    private Path recipe(Path data, String more) throws IOException {
        return Files.writeString(dir.resolve("recipe.yaml"), "model:\n  preset: tiny-mistral\n"
                + "data:\n  files: [" + data + "]\n  max_seq_len: 64\n" + more
                + "train:\n  max_steps: 1\noutput_dir: " + dir.resolve("out") + "\n");
    }

    @Test
    void aRecipeTrainCanStartIsOkWithWhatItsDataHolds() throws IOException {
        Path recipe = recipe(Files.write(dir.resolve("chats.jsonl"), List.of(CHAT, CHAT)), "");
        Result ok = MixtuneCliTest.run("validate", "--recipe", recipe.toString());
        assertEquals(0, ok.code(), ok.err());
        assertTrue(ok.lastLine().startsWith("# " + recipe + ": ok (2 training samples, 0 validation samples; "),
                ok.lastLine());
        assertFalse(Files.exists(dir.resolve("out")), "validate writes nothing");
    }

    @Test
    void aRecipeWithoutOutputDirValidates() throws IOException {
        Path chats = Files.write(dir.resolve("chats.jsonl"), List.of(CHAT, CHAT));
        Path recipe = Files.writeString(dir.resolve("no-output.yaml"), "model:\n  preset: tiny-mistral\n"
                + "data:\n  files: [" + chats + "]\n  max_seq_len: 64\n");
        Result ok = MixtuneCliTest.run("validate", "--recipe", recipe.toString());
        assertEquals(0, ok.code(), ok.err());
        assertTrue(ok.out().contains("output_dir: out/no-output"), ok.out());
        assertFalse(Files.exists(Path.of("out/no-output")), "validate writes nothing");
    }

    /** Train stops on these before its first step (before the model loads); validate said ok to each. */
    @Test
    void dataThatStopsTrainingStopsValidateWithTheSameMessage() throws IOException {
        Path empty = Files.writeString(dir.resolve("empty.jsonl"), "");
        Path recipe = recipe(empty, "");
        String expected = recipe + ":4: data.files: no usable training sample in " + empty + " (0 samples";
        Result validate = MixtuneCliTest.run("validate", "--recipe", recipe.toString());
        assertEquals(2, validate.code(), validate.out());
        assertTrue(validate.err().startsWith("mixtune validate: " + expected), validate.err());
        assertEquals(1, validate.err().strip().lines().count(), validate.err());
        Result train = MixtuneCliTest.run("train", "--recipe", recipe.toString());
        assertEquals(2, train.code(), train.out());
        assertTrue(train.err().startsWith("mixtune train: " + expected), train.err());
        assertFalse(Files.exists(dir.resolve("out/base-model")), "bad data stops the run before the model loads");

        // Only unusable records, skipped as the recipe asks: nothing left to train on ({"text"} is a text record now).
        Path noAssistant = Files.writeString(dir.resolve("bad.jsonl"), "{\"note\": \"no chat here\"}\n");
        Result skipped = MixtuneCliTest.run("validate", "--recipe", recipe(noAssistant, "  skip_invalid: true\n")
                .toString());
        assertEquals(2, skipped.code(), skipped.out());
        assertTrue(skipped.err().contains(":4: data.files: no usable training sample in " + noAssistant), skipped.err());

        // A bad record the recipe does not skip: the file and line, exit 2 in every command that reads it.
        Path badLine = Files.write(dir.resolve("line2.jsonl"), List.of(CHAT, "{\"messages\": 3}", CHAT));
        Path strict = recipe(badLine, "");
        for (List<String> command : List.of(List.of("validate"), List.of("train"), List.of("data", "prepare"))) {
            String[] args = new String[command.size() + 2];
            for (int i = 0; i < command.size(); i++) {
                args[i] = command.get(i);
            }
            args[command.size()] = "--recipe";
            args[command.size() + 1] = strict.toString();
            Result bad = MixtuneCliTest.run(args);
            assertEquals(2, bad.code(), command + ": " + bad.err());
            assertTrue(bad.err().startsWith("mixtune " + String.join(" ", command) + ": " + badLine + ":2: "),
                    command + ": " + bad.err());
        }
        Result eval = MixtuneCliTest.run("eval", "--model", dir.resolve("no-model").toString(), "--data",
                badLine.toString());
        assertEquals(2, eval.code(), eval.err());
    }

    @Test
    void everyProblemIsOnItsOwnLineAndExitsTwo() throws IOException {
        Path recipe = Files.writeString(dir.resolve("r.yaml"), """
                model:
                  preset: tiny-mistral
                lora:
                  r: 48
                data:
                  files: [absent.jsonl]
                train:
                  warmup_steps: 9
                  max_steps: 4
                dpo:
                  beta: -1
                """);
        Result validate = MixtuneCliTest.run("validate", "--recipe", recipe.toString());
        assertEquals(2, validate.code(), validate.out());
        List<String> lines = validate.err().strip().lines().toList();
        // The warmup longer than the run is a warning (see RecipeReaderTest), printed only with a recipe that is ok.
        // output_dir is not among them: it defaults to out/<recipe file name>.
        assertEquals(3, lines.size(), validate.err());
        assertTrue(lines.get(0).startsWith("mixtune validate: " + recipe + ":4: lora.r: rank 48 exceeds"), lines.get(0));
        assertTrue(lines.get(1).startsWith("mixtune validate: " + recipe + ":6: data.files[0]: no such file"),
                lines.get(1));
        assertEquals("mixtune validate: " + recipe + ":11: dpo.beta: must be > 0, got -1.0", lines.get(2));
        // train reads the recipe with the same reader, and stops on the same lines before anything loads.
        Result train = MixtuneCliTest.run("train", "--recipe", recipe.toString());
        assertEquals(2, train.code(), train.out());
        assertEquals(3, train.err().strip().lines().count(), train.err());
    }

    /**
     * An output_dir below a file can never be made: validate names it at its line, and train stops on the same line
     * before anything loads (it failed with exit 1 after the data was read, "cannot create").
     */
    @Test
    void anOutputDirBelowAFileIsRefusedAtItsLine() throws IOException {
        Path chats = Files.write(dir.resolve("chats.jsonl"), List.of(CHAT, CHAT));
        Path recipe = Files.writeString(dir.resolve("below.yaml"), "model:\n  preset: tiny-mistral\n"
                + "data:\n  files: [" + chats + "]\n  max_seq_len: 64\noutput_dir: " + chats.resolve("run") + "\n");
        String expected = recipe + ":6: output_dir: " + chats.resolve("run") + " cannot be created: " + chats
                + " is a file";
        for (String command : List.of("validate", "train")) {
            Result refused = MixtuneCliTest.run(command, "--recipe", recipe.toString());
            assertEquals(2, refused.code(), refused.out() + refused.err());
            assertTrue(refused.err().startsWith("mixtune " + command + ": " + expected), refused.err());
            assertEquals(1, refused.err().strip().lines().count(), refused.err());
        }
        assertEquals(List.of(CHAT, CHAT), Files.readAllLines(chats));
    }

    /**
     * A model or adapter whose files are damaged (a cut download, a hand-edited adapter_config.json): validate names
     * each at the key's line, and train stops on the same lines before the data is read; validate said ok to both.
     */
    @Test
    void damagedModelAndAdapterFilesAreNamedBeforeAnythingLoads() throws IOException {
        Path model = dir.resolve("model");
        assertEquals(0, MixtuneCliTest.run("init-model", "--preset", "tiny-mistral", "--out", model.toString()).code());
        Path weights = model.resolve("model.safetensors");
        Files.write(weights, java.util.Arrays.copyOf(Files.readAllBytes(weights), 100_000));
        Path adapter = Files.createDirectories(dir.resolve("adapter"));
        Files.writeString(adapter.resolve("adapter_config.json"), "{\"r\": 8,\n");
        Path chats = Files.write(dir.resolve("chats.jsonl"), List.of(CHAT, CHAT));
        Path recipe = Files.writeString(dir.resolve("damaged.yaml"), "model:\n  path: " + model + "\n  adapter: "
                + adapter + "\ndata:\n  files: [" + chats + "]\n  max_seq_len: 64\noutput_dir: " + dir.resolve("out")
                + "\n");
        for (String command : List.of("validate", "train")) {
            Result refused = MixtuneCliTest.run(command, "--recipe", recipe.toString());
            assertEquals(2, refused.code(), refused.out() + refused.err());
            List<String> lines = refused.err().strip().lines().toList();
            assertEquals(2, lines.size(), refused.err());
            assertTrue(lines.get(0).startsWith("mixtune " + command + ": " + recipe + ":2: model.path: " + weights
                    + ": "), lines.get(0));
            assertTrue(lines.get(1).startsWith("mixtune " + command + ": " + recipe + ":3: model.adapter: "
                    + adapter.resolve("adapter_config.json") + ": not valid JSON"), lines.get(1));
        }
        assertFalse(Files.exists(dir.resolve("out")), "nothing written");
    }
}
