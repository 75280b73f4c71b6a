package io.mixtune.merging.gguf;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.merging.SentencePieceModel;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

/**
 * A {@code tokenizer.json}-only vocabulary (no tokenizer.model) as llama.cpp's convert_hf_to_gguf.py writes it for a
 * llama-architecture model: LlamaModel.set_vocab finds no tokenizer.model, LlamaHfVocab refuses a byte-level BPE (no
 * byte_fallback), and TextModel._set_vocab_gpt2 writes tokenizer.ggml.model "gpt2", the pre-tokenizer that
 * get_vocab_base_pre recognises by the ids of a fixed text (Mistral-Nemo's, Mistral-Small-3's and Ministral's Tekken:
 * "tekken"), the tokens and their types (get_vocab_base); SpecialVocab with merges follows
 * ({@link GgufVocabulary}). What the converter refuses is refused here too, before anything is written.
 */
final class GgufBpeVocabulary {
    /**
     * get_vocab_base_pre's check text (chktxt), which the converter encodes with the model's tokenizer, and its table
     * from the sha256 of the ids' Python repr (chkhsh) to tokenizer.ggml.pre, read out of the converter by
     * interop/make_gguf_vocab_goldens.py.
     */
    private static final String PRE_TOKENIZERS = "io/mixtune/merging/gguf/bpe-pre-tokenizers.json";
    private static final ObjectMapper JSON = new ObjectMapper();

    private GgufBpeVocabulary() {}

    /**
     * Puts tokenizer.ggml.model, pre, tokens and token_type.
     *
     * @param file the tokenizer.json
     * @param tokenizerConfig tokenizer_config.json, or null: the tokens it names are special (see
     *     {@link #withNamedSpecialTokens})
     * @param vocabSize config.json's vocab_size: ids under it missing from the vocabulary are [PADi], unused
     */
    static void put(GgufWriter writer, Path file, JsonNode tokenizer, JsonNode tokenizerConfig, int vocabSize) {
        JsonNode loaded = withNamedSpecialTokens(tokenizer, tokenizerConfig);
        JsonNode model = tokenizer.path("model");
        boolean byteFallback = model.path("byte_fallback").asBoolean(false);
        boolean llama3 = model.path("type").asText().equals("BPE") && model.path("ignore_merges").asBoolean(false)
                && !model.path("byte_fallback").asBoolean(true);
        if (!llama3 && model.path("type").asText().equals("BPE") && byteFallback
                && tokenizer.path("decoder").path("type").asText().equals("Sequence")) {
            // LlamaHfVocab: the converter rebuilds it through transformers' slow-tokenizer bookkeeping (scores,
            // byte tokens), which export-gguf does not reproduce
            throw new IllegalArgumentException(file + " is a SentencePiece-style BPE (byte_fallback) and the model has"
                    + " no tokenizer.model: export-gguf writes such a vocabulary from tokenizer.model, as llama.cpp's"
                    + " converter prefers; put the base model's tokenizer.model beside it");
        }
        JsonNode table = preTokenizers();
        String pre;
        List<String> texts = new ArrayList<>();
        int[] types = new int[vocabSize];
        try (HuggingFaceTokenizer hf = open(file, loaded == tokenizer ? null : loaded)) {
            Map<Integer, String> tokens = new HashMap<>();
            model.path("vocab").properties().forEach(entry -> tokens.put(entry.getValue().asInt(), entry.getKey()));
            Map<String, JsonNode> added = new LinkedHashMap<>();
            for (JsonNode token : loaded.path("added_tokens")) {
                // the id the tokenizers library gives it (the vocabulary's, else one past the vocabulary's size),
                // which transformers' tokenizer.vocab lists, not necessarily the one tokenizer.json declares
                String content = token.path("content").asText();
                long[] ids = hf.encode(content, false, false).getIds();
                tokens.put(ids.length == 1 ? Math.toIntExact(ids[0]) : token.path("id").asInt(), content);
                added.put(content, token);
            }
            int maxId = tokens.keySet().stream().mapToInt(Integer::intValue).max().orElse(-1);
            if (maxId >= vocabSize) {
                throw new IllegalArgumentException(file + " holds token id " + maxId + " where config.json's"
                        + " vocab_size is " + vocabSize + " (the converter asserts every id is under it); give the"
                        + " model its own tokenizer");
            }
            String hash = checkHash(hf.encode(table.path("chktxt").asText(), true, false).getIds());
            pre = table.path("chkhsh").path(hash).asText(null);
            if (pre == null) {
                throw new IllegalArgumentException(file + ": its pre-tokenizer is not one llama.cpp knows (chkhsh "
                        + hash + " is not in convert_hf_to_gguf.py's get_vocab_base_pre, which refuses it: \"BPE"
                        + " pre-tokenizer was not recognized\"); a fine-tune keeps its base model's tokenizer.json"
                        + " (Mistral-Nemo's, Mistral-Small-3's, Ministral's Tekken is \"tekken\"): copy the base"
                        + " model's tokenizer files into the model folder");
            }
            for (int id = 0; id < vocabSize; id++) {
                String token = tokens.get(id);
                if (token == null) {
                    texts.add("[PAD" + id + "]");
                    types[id] = SentencePieceModel.UNUSED;
                    continue;
                }
                JsonNode addedToken = added.get(token);
                if (addedToken == null) {
                    types[id] = SentencePieceModel.NORMAL;
                } else {
                    if (!addedToken.path("normalized").asBoolean(true)) {
                        // get_vocab_base pre-normalizes such tokens by a round trip through the tokenizer
                        token = hf.decode(hf.encode(token, false, false).getIds(), false);
                    }
                    if (addedToken.path("special").asBoolean(false) || GgufVocabulary.looksSpecial(token)) {
                        types[id] = SentencePieceModel.CONTROL;
                    } else {
                        token = token.replace("\u2581", " ");
                        types[id] = SentencePieceModel.USER_DEFINED;
                    }
                }
                texts.add(token);
            }
        }
        writer.putString("tokenizer.ggml.model", "gpt2");
        writer.putString("tokenizer.ggml.pre", pre);
        writer.putStrings("tokenizer.ggml.tokens", texts);
        writer.putInt32s("tokenizer.ggml.token_type", types);
    }

    /**
     * SpecialVocab's merges out of tokenizer.json: "a b" strings as they are, ["a", "b"] pairs joined by a space
     * with a space inside a part written U+0120 (the byte-level space), as gguf-py does since transformers 4.45.
     */
    static List<String> merges(Path file, JsonNode tokenizer) {
        JsonNode merges = tokenizer.path("model").path("merges");
        List<String> out = new ArrayList<>();
        for (JsonNode merge : merges) {
            if (merge.isTextual()) {
                out.add(merge.asText());
            } else if (merge.isArray() && merge.size() == 2 && merge.get(0).isTextual()) {
                out.add(merge.get(0).asText().replace(' ', '\u0120') + " "
                        + merge.get(1).asText().replace(' ', '\u0120'));
            } else {
                throw new IllegalArgumentException(file + ": model.merges entry " + merge + " is neither \"a b\" nor"
                        + " [\"a\", \"b\"] (the converter's \"Unknown tokenizer merges format\")");
            }
        }
        return out;
    }

    /** sha256 of the ids as Python's str(list) writes them: "[1, 1010, 1032]". */
    static String checkHash(long[] ids) {
        String repr = Arrays.stream(ids).mapToObj(Long::toString).collect(Collectors.joining(", ", "[", "]"));
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            return HexFormat.of().formatHex(sha.digest(repr.getBytes(StandardCharsets.UTF_8)));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * The tokenizer.json as transformers' fast tokenizer runs it (tokenizer.encode adds the post-processor's special
     * tokens; added tokens are matched in text): the Rust tokenizers library, as there. Not TextTokenizer, which
     * never matches special tokens in text.
     */
    private static HuggingFaceTokenizer open(Path file, JsonNode changed) {
        try {
            byte[] json = changed == null ? Files.readAllBytes(file) : JSON.writeValueAsBytes(changed);
            return HuggingFaceTokenizer.newInstance(new ByteArrayInputStream(json),
                    Map.of("addSpecialTokens", "true", "truncation", "false", "padding", "false"));
        } catch (IOException | RuntimeException e) {
            throw new IllegalArgumentException(file + ": the tokenizers library cannot read it: " + e.getMessage(), e);
        }
    }

    /**
     * tokenizer.json as transformers 5 loads it: TokenizersBackend.__init__ and _post_init add every token that
     * tokenizer_config.json names (bos_token ... mask_token, extra_special_tokens or additional_special_tokens, an
     * added_tokens_decoder entry marked special) as a special added token, so get_vocab_base types it control even where tokenizer.json says "special": false or
     * lists it in the vocabulary only, and a named token in neither gets the next id (as the tokenizers library gives
     * it). The same object where nothing changes.
     */
    static JsonNode withNamedSpecialTokens(JsonNode tokenizer, JsonNode tokenizerConfig) {
        if (tokenizerConfig == null) {
            return tokenizer;
        }
        List<JsonNode> named = new ArrayList<>();
        for (String key : List.of("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                "mask_token")) {
            named.add(tokenizerConfig.path(key));
        }
        JsonNode extra = tokenizerConfig.path("extra_special_tokens");
        if (extra.isEmpty()) {
            extra = tokenizerConfig.path("additional_special_tokens");
        }
        extra.forEach(named::add);
        // an added_tokens_decoder entry that differs from tokenizer.json's token is added again, so its "special":
        // true wins (checked in 5.18; a "special": false there does not demote a token)
        tokenizerConfig.path("added_tokens_decoder").forEach(token -> {
            if (token.path("special").asBoolean(false)) {
                named.add(token);
            }
        });
        ObjectNode copy = tokenizer.deepCopy();
        ArrayNode added = copy.withArray("added_tokens");
        JsonNode vocab = copy.path("model").path("vocab");
        boolean changed = false;
        for (JsonNode entry : named) {
            String content = entry.isTextual() ? entry.asText() : entry.path("content").asText("");
            if (content.isEmpty()) {
                continue;
            }
            ObjectNode existing = null;
            for (JsonNode token : added) {
                if (token.path("content").asText().equals(content)) {
                    existing = (ObjectNode) token;
                }
            }
            if (existing != null) {
                changed |= !existing.path("special").asBoolean(false);
                existing.put("special", true);
                continue;
            }
            int next = 0;
            for (JsonNode id : vocab) {
                next = Math.max(next, id.asInt() + 1);
            }
            for (JsonNode token : added) {
                next = Math.max(next, token.path("id").asInt() + 1);
            }
            added.addObject().put("id", vocab.has(content) ? vocab.get(content).asInt() : next)
                    .put("content", content).put("single_word", false).put("lstrip", false).put("rstrip", false)
                    .put("normalized", false).put("special", true);
            changed = true;
        }
        return changed ? copy : tokenizer;
    }

    private static JsonNode preTokenizers() {
        try (InputStream in = GgufBpeVocabulary.class.getClassLoader().getResourceAsStream(PRE_TOKENIZERS)) {
            if (in == null) {
                throw new IllegalStateException("no " + PRE_TOKENIZERS + " on the classpath");
            }
            return JSON.readTree(in);
        } catch (IOException e) {
            throw new UncheckedIOException(PRE_TOKENIZERS + ": " + e.getMessage(), e);
        }
    }
}
