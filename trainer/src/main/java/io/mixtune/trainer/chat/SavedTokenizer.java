package io.mixtune.trainer.chat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.data.template.ChatTemplate;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.TrainingData;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * The tokenizer files mixtune writes beside what it saves (an adapter, a preset's base model), so that
 * {@code AutoTokenizer.from_pretrained(dir).apply_chat_template(...)} works there and gives the ids the model was
 * trained on: the model's tokenizer.json, and its tokenizer_config.json (or a minimal one) whose {@code chat_template}
 * is the template trained with, in Jinja ({@link ChatTemplate#jinja}), a custom template's too.
 *
 * <p>The template writes {@code bos_token} and {@code eos_token} as text, and transformers makes them the BOS and EOS
 * ids only where the tokenizer.json declares them special and {@code split_special_tokens} is false. mixtune's bundled
 * Mistral v1 tokenizer.json declares none and sets it true (so that transformers keeps "</s>" typed in a chat as text,
 * as mixtune does); the files written here declare {@code <unk> <s> </s>} special, as a Hub Mistral's do, and set it
 * false, so apply_chat_template gives mixtune's ids (a chat that types "</s>" itself is the one place they differ).
 */
public final class SavedTokenizer {
    public static final List<String> FILES = List.of("tokenizer.json", "tokenizer_config.json");
    private static final ObjectMapper JSON = new ObjectMapper();

    private SavedTokenizer() {}

    /** The tokenizer files of the recipe's model, with the recipe's chat template, into {@code dir}. */
    public static void write(Path dir, Recipe recipe) {
        of(recipe).writeInto(dir);
    }

    /** Plain writes: callers write into a staging folder that is renamed into place whole. */
    public static void write(Path dir, TokenizerFile tokenizer, ChatTemplate template) {
        of(tokenizer, template).writeInto(dir);
    }

    /** The files' bytes, read and rewritten once for a run that writes them beside every checkpoint's adapters. */
    public record Contents(byte[] tokenizerJson, byte[] tokenizerConfig) {
        /** Plain writes, as {@link SavedTokenizer#write(Path, TokenizerFile, ChatTemplate)}. */
        public void writeInto(Path dir) {
            try {
                Files.write(dir.resolve("tokenizer.json"), tokenizerJson);
                Files.write(dir.resolve("tokenizer_config.json"), tokenizerConfig);
            } catch (IOException e) {
                throw new UncheckedIOException("cannot write the tokenizer files into " + dir + ": " + e.getMessage(),
                        e);
            }
        }
    }

    /** The recipe's model's tokenizer files with the recipe's chat template. */
    public static Contents of(Recipe recipe) {
        TokenizerFile tokenizer = TrainingData.tokenizer(recipe);
        return of(tokenizer, recipe.data().chatTemplate(tokenizer));
    }

    private static Contents of(TokenizerFile tokenizer, ChatTemplate template) {
        try {
            return new Contents(tokenizerJson(tokenizer), config(tokenizer, template.jinja()));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read the model's tokenizer: " + e.getMessage(), e);
        }
    }

    /** The model's tokenizer.json with its unknown, BOS and EOS tokens declared special added tokens. */
    public static byte[] tokenizerJson(TokenizerFile tokenizer) throws IOException {
        ObjectNode root = (ObjectNode) JSON.readTree(tokenizer.json());
        JsonNode vocab = root.path("model").path("vocab");
        ArrayNode added = root.has("added_tokens") && root.get("added_tokens").isArray()
                ? (ArrayNode) root.get("added_tokens") : root.putArray("added_tokens");
        for (String token : List.of("<unk>", "<s>", "</s>")) {
            boolean declared = false;
            for (JsonNode entry : added) {
                declared |= token.equals(entry.path("content").asText());
            }
            if (!declared && vocab.isObject() && vocab.has(token)) {
                added.addObject().put("id", vocab.get(token).asLong()).put("content", token).put("single_word", false)
                        .put("lstrip", false).put("rstrip", false).put("normalized", false).put("special", true);
            }
        }
        return JSON.writeValueAsBytes(root);
    }

    /** The model's tokenizer_config.json (a minimal one where it has none) with {@code chat_template} set. */
    public static byte[] config(TokenizerFile tokenizer, String chatTemplate) throws IOException {
        ObjectNode config;
        if (tokenizer.config() != null) {
            JsonNode read = JSON.readTree(tokenizer.config());
            config = read instanceof ObjectNode object ? object : JSON.createObjectNode();
        } else {
            config = JSON.createObjectNode().put("tokenizer_class", "PreTrainedTokenizerFast").put("bos_token", "<s>")
                    .put("eos_token", "</s>").put("unk_token", "<unk>");
        }
        config.put("split_special_tokens", false);
        if (chatTemplate == null) {
            config.remove("chat_template");
        } else {
            config.put("chat_template", chatTemplate);
        }
        return JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(config);
    }
}
