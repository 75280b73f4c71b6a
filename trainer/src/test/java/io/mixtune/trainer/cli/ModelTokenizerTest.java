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

    /** A model whose tokenizer has no BOS: config.json's bos_token_id null, tokenizer_config.json's bos_token as given. */
    Path modelWithBosToken(String name, String bosToken) throws IOException {
        Path model = model(name);
        ObjectMapper json = new ObjectMapper();
        json.writeValue(model.resolve("config.json").toFile(),
                ((ObjectNode) json.readTree(model.resolve("config.json").toFile())).putNull("bos_token_id"));
        ObjectNode config = (ObjectNode) json.readTree(model.resolve("tokenizer_config.json").toFile());
        json.writeValue(model.resolve("tokenizer_config.json").toFile(),
                bosToken == null ? config.putNull("bos_token") : config.put("bos_token", bosToken));
        return model;
    }

    /** The prompt positions generate ran on (rows of --dump-logits). */
    long promptLength(Path model, String... prompt) throws IOException {
        Path logits = dir.resolve("logits-" + model.getFileName() + prompt.length + ".safetensors");
        List<String> command = new java.util.ArrayList<>(List.of("generate", "--model", model.toString(),
                "--max-new-tokens", "1", "--dump-logits", logits.toString()));
        command.addAll(List.of(prompt));
        Result result = MixtuneCliTest.run(command.toArray(String[]::new));
        assertEquals(0, result.code(), result.err());
        try (SafetensorsReader dumped = SafetensorsReader.open(logits)) {
            return dumped.info("logits").shape()[0];
        }
    }

    /**
     * config.json's bos_token_id null and tokenizer_config.json's bos_token null: transformers 5.18 loads the model,
     * its chat template renders no BOS and a text prompt gets what tokenizer.json's post-processor adds. So does
     * mixtune (every tokenizing command refused it before): "Hi" is [<s>, ▁Hi] with Mistral's TemplateProcessing and
     * [▁Hi] without one (data-pipeline's NoBosTemplateGoldenTest holds the golden ids); the chat "[INST] Hi [/INST]" is
     * 8 ids, no BOS; an empty text prompt with nothing to encode (no post-processor) is refused, as generate() without
     * input ids raises in transformers.
     */
    @Test
    void aModelWithoutABosTokenTokenizesAsTransformersDoes() throws IOException {
        Path model = modelWithBosToken("no-bos", null);
        Result adapter = MixtuneCliTest.run("init-adapter", "--model", model.toString(), "--out",
                dir.resolve("adapter").toString(), "--r", "4");
        assertEquals(0, adapter.code(), adapter.err());
        assertEquals(2, promptLength(model, "--prompt", "Hi"), "the post-processor's <s> and ▁Hi");
        assertEquals(8, promptLength(model, "--prompt", "Hi", "--chat"), "[INST] Hi [/INST] without BOS");
        Path recipe = recipe(model);
        Result prepared = MixtuneCliTest.run("data", "prepare", "--recipe", recipe.toString());
        assertEquals(0, prepared.code(), prepared.err());
        assertTrue(prepared.out().contains("(bos none, eos 2)"), prepared.out());

        ObjectMapper json = new ObjectMapper();
        ObjectNode tokenizer = (ObjectNode) json.readTree(model.resolve("tokenizer.json").toFile());
        json.writeValue(model.resolve("tokenizer.json").toFile(), tokenizer.putNull("post_processor"));
        Result empty = MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt", "",
                "--max-new-tokens", "1");
        assertEquals(2, empty.code(), empty.err());
        assertTrue(empty.err().contains("prompt is empty and " + model.resolve("tokenizer.json") + " adds no token to "
                + "it (the model has no BOS and its post-processor writes none)"), empty.err());
    }

    /**
     * A bos_token tokenizer.json lacks: transformers 5.18 adds it at a new id past the vocabulary (32000 here, a row
     * the embedding lacks); mixtune refuses it in every command that tokenizes, naming both files.
     */
    @Test
    void aBosTokenTheTokenizerLacksIsRefusedWhereItTokenizes() throws IOException {
        Path model = modelWithBosToken("unknown-bos", "<start>");
        assertEveryCommandRefuses(model, model.resolve("config.json") + ": bos_token_id is null and "
                + model.resolve("tokenizer.json") + " has no token \"<start>\" (the bos_token of "
                + model.resolve("tokenizer_config.json") + "): transformers would add it as a new token past the "
                + "vocabulary, which needs a resized embedding");
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
