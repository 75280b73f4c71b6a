package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.cli.MixtuneCliTest.Result;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * One rule for the tokenizer, in every command that tokenizes for a model: the model folder's own tokenizer.json (the
 * bundled Mistral v1 one only for a preset), and its ids must fit the model's vocab_size. Before, train fell back to
 * the bundled tokenizer in silence (a 32000-token model) or died in libtorch ("index out of range in self").
 */
class ModelTokenizerTest {
    @TempDir
    Path dir;

    Path model(String name) {
        Path model = dir.resolve(name);
        assertEquals(0, MixtuneCliTest.run("init-model", "--preset", "tiny-mistral", "--out", model.toString()).code());
        return model;
    }

    Path chats() throws IOException {
        return Files.writeString(dir.resolve("chats.jsonl"), """
                {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
                """);
    }

    Path recipe(Path model) throws IOException {
        return Files.writeString(dir.resolve("recipe.yaml"), "model:\n  path: " + model + "\ndata:\n  files: ["
                + chats() + "]\n  max_seq_len: 64\ntrain:\n  max_steps: 1\noutput_dir: " + dir.resolve("out") + "\n");
    }

    /** Every command, with the exit code it gives for it: train's input errors exit 1 today, the others' 2. */
    void assertEveryCommandRefuses(Path model, String expected) throws IOException {
        Path recipe = recipe(model);
        List<List<String>> commands = List.of(List.of("train", "--recipe", recipe.toString()),
                List.of("data", "prepare", "--recipe", recipe.toString()),
                List.of("data", "preview", "--recipe", recipe.toString()),
                List.of("eval", "--model", model.toString(), "--data", chats().toString()),
                List.of("generate", "--model", model.toString(), "--prompt", "Hi", "--max-new-tokens", "1"));
        for (List<String> command : commands) {
            Result result = MixtuneCliTest.run(command.toArray(String[]::new));
            assertTrue(result.code() != 0, command + " succeeded: " + result.out());
            assertTrue(result.err().contains(expected), command + ": " + result.err());
            assertEquals(1, result.err().strip().lines().count(), command + ": " + result.err());
        }
        assertFalse(Files.exists(dir.resolve("out/adapter")), "nothing trained");
    }

    @Test
    void aModelFolderWithoutItsTokenizerIsRefused() throws IOException {
        Path model = model("no-tokenizer");
        Files.delete(model.resolve("tokenizer.json"));
        assertEveryCommandRefuses(model, model + ": no tokenizer.json: mixtune tokenizes with the model's own "
                + "tokenizer; copy the model's tokenizer.json into " + model + " (the bundled Mistral v1 tokenizer "
                + "serves only the presets, which are built with it)");
        Result generate = MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt", "Hi");
        assertEquals(2, generate.code());
        assertTrue(generate.err().contains("; or give the prompt as --prompt-ids"), generate.err());
    }

    /** A ChatML tokenizer (<|im_start|> = 32000) next to a base model of 32000 rows that was never resized for it. */
    @Test
    void aTokenizerWithIdsPastTheVocabularyIsRefused() throws IOException {
        Path model = model("chatml-tokenizer");
        ObjectMapper json = new ObjectMapper();
        ObjectNode tokenizer = (ObjectNode) json.readTree(model.resolve("tokenizer.json").toFile());
        tokenizer.putArray("added_tokens").addObject().put("id", 32000).put("content", "<|im_start|>")
                .put("single_word", false).put("lstrip", false).put("rstrip", false).put("normalized", false)
                .put("special", true);
        json.writeValue(model.resolve("tokenizer.json").toFile(), tokenizer);
        assertEveryCommandRefuses(model, model.resolve("tokenizer.json") + ": gives token ids up to 32000, but the "
                + "model in " + model + " has vocab_size 32000: it is not this model's tokenizer; put the model's own "
                + "tokenizer.json in " + model);
    }

    /**
     * config.json's bos_token_id null and tokenizer_config.json's bos_token null: transformers 5.18 loads the model
     * (its chat template renders no BOS). mixtune reads it too, so a command that never tokenizes runs (init-adapter;
     * before, every command refused config.json), and only the commands that tokenize refuse it, naming both files.
     */
    @Test
    void aModelWithoutABosTokenIsReadAndRefusedOnlyWhereItTokenizes() throws IOException {
        Path model = model("no-bos");
        ObjectMapper json = new ObjectMapper();
        json.writeValue(model.resolve("config.json").toFile(),
                ((ObjectNode) json.readTree(model.resolve("config.json").toFile())).putNull("bos_token_id"));
        json.writeValue(model.resolve("tokenizer_config.json").toFile(),
                ((ObjectNode) json.readTree(model.resolve("tokenizer_config.json").toFile())).putNull("bos_token"));
        Result adapter = MixtuneCliTest.run("init-adapter", "--model", model.toString(), "--out",
                dir.resolve("adapter").toString(), "--r", "4");
        assertEquals(0, adapter.code(), adapter.err());
        assertEveryCommandRefuses(model, model.resolve("config.json") + ": bos_token_id is null and "
                + model.resolve("tokenizer_config.json") + " sets bos_token to null: mixtune tokenizes with a BOS id");
    }

    /**
     * A generate prompt is text: with a Hub tokenizer.json that lists {@code <s>} and {@code </s>} as special added
     * tokens, "</s>" typed in --prompt is its three characters' pieces after the BOS (4 prompt positions), not EOS.
     */
    @Test
    void aGeneratePromptThatSpellsSpecialTokensStaysText() throws IOException {
        Path model = model("hub-tokenizer");
        ObjectMapper json = new ObjectMapper();
        ObjectNode tokenizer = (ObjectNode) json.readTree(model.resolve("tokenizer.json").toFile());
        String[] specials = {"<unk>", "<s>", "</s>"};
        ArrayNode added = tokenizer.putArray("added_tokens");
        for (int id = 0; id < specials.length; id++) {
            added.addObject().put("id", id).put("content", specials[id]).put("single_word", false).put("lstrip", false)
                    .put("rstrip", false).put("normalized", false).put("special", true);
        }
        json.writeValue(model.resolve("tokenizer.json").toFile(), tokenizer);
        Path logits = dir.resolve("logits.safetensors");
        Result result = MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt", "</s>",
                "--max-new-tokens", "1", "--dump-logits", logits.toString());
        assertEquals(0, result.code(), result.err());
        try (SafetensorsReader dumped = SafetensorsReader.open(logits)) {
            assertEquals(4, dumped.info("logits").shape()[0], "BOS + the pieces of \"</s>\" (▁</ s >)");
        }
    }
}
