package io.mixtune.merging.gguf;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.merging.SentencePieceModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The tokenizer as llama.cpp's convert_hf_to_gguf.py writes it for a SentencePiece model (Mistral v0.1 to v0.3,
 * Mixtral, mixtune's presets): tokenizer.ggml.model "llama", pre "default", the tokens, scores and types
 * (TextModel._create_vocab_sentencepiece), then the special token ids, add_bos/add_eos/add_sep and the chat template
 * as gguf-py's SpecialVocab finds them in tokenizer.json, tokenizer_config.json, chat_template.jinja/.json and
 * config.json. Each file is read where a merged checkpoint would hold it ({@code AdapterMerge.tokenizerSources}).
 */
final class GgufVocabulary {
    /** SpecialVocab's special_token_types, in its order. */
    private static final List<String> SPECIAL_TYPES = List.of("bos", "eos", "unk", "sep", "pad", "cls", "mask");
    /** The GGUF key of each special id gguf-py's writer has a handler for (cls has none: SpecialVocab skips it). */
    private static final Map<String, String> ID_KEYS = Map.of("bos", "tokenizer.ggml.bos_token_id",
            "eos", "tokenizer.ggml.eos_token_id", "unk", "tokenizer.ggml.unknown_token_id",
            "sep", "tokenizer.ggml.seperator_token_id", "pad", "tokenizer.ggml.padding_token_id",
            "mask", "tokenizer.ggml.mask_token_id");
    private static final List<String> ADD_HANDLED = List.of("bos", "eos", "sep");

    private static final ObjectMapper JSON = new ObjectMapper();

    private GgufVocabulary() {}

    /**
     * Puts the tokenizer keys.
     *
     * @param files each tokenizer file's name and the directory it is read from
     * @param configJson the model's config.json (its *_token_id, as SpecialVocab reads it last)
     * @param vocabSize config.json's vocab_size: the tokens are padded with [PADi] or cut to it, as the converter does
     */
    static void put(GgufWriter writer, Map<String, Path> files, Path configJson, int vocabSize) {
        Path sentencePiece = file(files, "tokenizer.model");
        Path tokenizerJson = file(files, "tokenizer.json");
        JsonNode tokenizer = json(tokenizerJson);
        if (sentencePiece == null && tokenizer == null) {
            throw new IllegalArgumentException("the model has neither tokenizer.model nor tokenizer.json: export-gguf"
                    + " writes the vocabulary from one of them, as llama.cpp's converter does; copy the base model's"
                    + " tokenizer files into the model folder");
        }
        JsonNode tokenizerConfig = json(file(files, "tokenizer_config.json"));
        if (tokenizerConfig != null && tokenizerConfig.path("add_prefix_space").isBoolean()) {
            // LlamaModel.set_vocab writes it before the vocabulary
            writer.putBool("tokenizer.ggml.add_space_prefix", tokenizerConfig.path("add_prefix_space").asBoolean());
        }
        String modelType = tokenizer == null ? "BPE" : tokenizer.path("model").path("type").asText("BPE");
        if (sentencePiece == null && !modelType.equals("BPE")) {
            // LlamaModel.set_vocab: no tokenizer.model, LlamaHfVocab takes only BPE, and _set_vocab_gpt2 stops on the
            // unknown pre-tokenizer hash (a hash it knows would give a gpt2 vocabulary without merges)
            throw new IllegalArgumentException(tokenizerJson + " is a " + modelType + " tokenizer and the model has no"
                    + " tokenizer.model: llama.cpp's converter writes a Mistral/Llama vocabulary from tokenizer.model"
                    + " (SentencePiece) or a BPE tokenizer.json, and refuses this one; put the base model's"
                    + " tokenizer.model (or its BPE tokenizer.json) into the model folder");
        }
        if (sentencePiece == null) {
            // no tokenizer.model: the converter's _set_vocab_gpt2, whose SpecialVocab has merges and no n_vocab
            GgufBpeVocabulary.put(writer, tokenizerJson, tokenizer, tokenizerConfig, vocabSize);
            putSpecialVocab(writer, files, tokenizerConfig, json(configJson), GgufBpeVocabulary.merges(tokenizerJson,
                    tokenizer), Integer.MAX_VALUE);
            return;
        }
        String[] tokens = new String[vocabSize];
        float[] scores = new float[vocabSize];
        int[] types = new int[vocabSize];
        for (int id = 0; id < vocabSize; id++) {
            tokens[id] = "[PAD" + id + "]";
            scores[id] = -10000f;
            types[id] = SentencePieceModel.UNUSED;
        }
        List<SentencePieceModel.Piece> pieces = SentencePieceModel.read(sentencePiece);
        for (int id = 0; id < Math.min(pieces.size(), vocabSize); id++) {
            SentencePieceModel.Piece piece = pieces.get(id);
            tokens[id] = piece.text();
            scores[id] = piece.score();
            // SentencePieceProcessor's IsUnknown, IsControl, IsUnused, IsByte; anything else (USER_DEFINED) is NORMAL
            types[id] = switch (piece.type()) {
                case SentencePieceModel.UNKNOWN, SentencePieceModel.CONTROL, SentencePieceModel.UNUSED,
                        SentencePieceModel.BYTE -> piece.type();
                default -> SentencePieceModel.NORMAL;
            };
        }
        JsonNode addedTokensFile = json(file(files, "added_tokens.json"));
        if (addedTokensFile != null) {
            addedTokensFile.properties().forEach(entry -> {
                int id = entry.getValue().asInt();
                if (id < vocabSize) {
                    tokens[id] = entry.getKey();
                    scores[id] = -1000f;
                    types[id] = SentencePieceModel.USER_DEFINED;
                }
            });
        }
        if (tokenizerConfig != null) {
            tokenizerConfig.path("added_tokens_decoder").properties().forEach(entry -> {
                int id = Integer.parseInt(entry.getKey());
                if (id >= vocabSize) {
                    return;
                }
                String content = entry.getValue().path("content").asText();
                if (entry.getValue().path("special").asBoolean(false) || looksSpecial(content)) {
                    types[id] = SentencePieceModel.CONTROL;
                } else {
                    content = content.replace("\u2581", " "); // the converter pre-normalizes user-defined spaces
                    types[id] = SentencePieceModel.USER_DEFINED;
                }
                scores[id] = -1000f;
                tokens[id] = content;
            });
        }
        writer.putString("tokenizer.ggml.model", "llama");
        writer.putString("tokenizer.ggml.pre", "default");
        writer.putStrings("tokenizer.ggml.tokens", Arrays.asList(tokens));
        writer.putFloat32s("tokenizer.ggml.scores", scores);
        writer.putInt32s("tokenizer.ggml.token_type", types);
        putSpecialVocab(writer, files, tokenizerConfig, json(configJson), List.of(), vocabSize);
    }

    /** TextModel.does_token_look_special. */
    static boolean looksSpecial(String token) {
        return List.of("<pad>", "<mask>", "<2mass>", "[@BOS@]").contains(token)
                || token.startsWith("<|") && token.endsWith("|>")
                || token.startsWith("<\uff5c") && token.endsWith("\uff5c>")
                || token.startsWith("<unused") && token.endsWith(">");
    }

    /**
     * gguf-py's SpecialVocab(dir, n_vocab).add_to_gguf: the merges (none for SentencePiece), special ids under
     * {@code vocabSize} (the gpt2 path passes no n_vocab), add_*_token, the chat template, the normalizer's lowercase.
     */
    private static void putSpecialVocab(GgufWriter writer, Map<String, Path> files, JsonNode tokenizerConfig,
            JsonNode config, List<String> merges, int vocabSize) {
        if (!merges.isEmpty()) {
            writer.putStrings("tokenizer.ggml.merges", merges);
        }
        Map<String, Integer> ids = new LinkedHashMap<>();
        Map<String, Boolean> add = new LinkedHashMap<>();
        String chatTemplate = null;
        JsonNode tokenizer = json(file(files, "tokenizer.json"));
        Boolean lowercase = tokenizer == null ? null : lowercase(tokenizer.path("normalizer"), null);
        if (tokenizer != null) {
            // compared as SpecialVocab compares them: a string entry; an AddedToken object never equals a token
            String bos = raw(tokenizerConfig, "bos_token");
            String eos = raw(tokenizerConfig, "eos_token");
            String cls = raw(tokenizerConfig, "cls_token");
            String sep = raw(tokenizerConfig, "sep_token");
            bos = bos == null && cls != null && tokenizerConfig != null ? cls : bos;
            eos = eos == null && sep != null && tokenizerConfig != null ? sep : eos;
            JsonNode postProcessor = tokenizer.path("post_processor");
            List<JsonNode> processors = new ArrayList<>();
            if (postProcessor.isObject()) {
                if (postProcessor.has("processors")) {
                    postProcessor.path("processors").forEach(processors::add);
                } else {
                    processors.add(postProcessor);
                }
            }
            for (JsonNode processor : processors) {
                String type = processor.path("type").asText();
                if (type.equals("RobertaProcessing")) {
                    add.put("bos", true);
                    add.put("eos", true);
                    add.put("sep", true);
                } else if (type.equals("TemplateProcessing")) {
                    templateProcessing(processor, tokenizerConfig != null, bos, eos, cls, sep, add);
                }
            }
        }
        if (tokenizerConfig == null) {
            putIds(writer, ids, add, null, lowercase, config, vocabSize);
            return;
        }
        Path jinja = file(files, "chat_template.jinja");
        Path templateJson = file(files, "chat_template.json");
        String alternative = null;
        try {
            if (jinja != null) {
                alternative = Files.readString(jinja);
            } else if (templateJson != null) {
                JsonNode template = json(templateJson).path("chat_template");
                alternative = template.isTextual() ? template.asText() : null;
            }
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(jinja + ": cannot be read: " + e.getMessage(), e);
        }
        if (tokenizerConfig.has("chat_template")) {
            JsonNode template = tokenizerConfig.get("chat_template");
            if (template.isArray()) {
                throw new IllegalArgumentException("tokenizer_config.json holds named chat templates (a list):"
                        + " export-gguf writes one template; keep the one to serve as a string");
            }
            chatTemplate = template.isTextual() ? template.asText() : null;
        } else {
            chatTemplate = alternative;
        }
        List<JsonNode> addedTokens = new ArrayList<>();
        if (tokenizer != null) {
            tokenizer.path("added_tokens").forEach(addedTokens::add);
        }
        for (String type : SPECIAL_TYPES) {
            JsonNode addEntry = tokenizerConfig.get("add_" + type + "_token");
            if (addEntry != null && addEntry.isBoolean()) {
                add.put(type, addEntry.asBoolean());
            }
            String content = text(tokenizerConfig, type + "_token");
            if (content == null) {
                continue;
            }
            addedTokens.stream().filter(token -> content.equals(token.path("content").asText(null))).findFirst()
                    .filter(token -> token.path("id").isInt())
                    .ifPresent(token -> setId(ids, type, token.path("id").asInt(), vocabSize));
        }
        putIds(writer, ids, add, chatTemplate, lowercase, config, vocabSize);
    }

    /**
     * SpecialVocab's crude reading of a TemplateProcessing: a leading special token in the single template adds BOS,
     * a trailing one EOS, a special token between A and B in the pair template SEP.
     */
    private static void templateProcessing(JsonNode processor, boolean hasConfig, String bos, String eos, String cls,
            String sep, Map<String, Boolean> add) {
        JsonNode single = processor.path("single");
        String first = null;
        String last = null;
        if (single.size() > 1) {
            first = single.get(0).path("SpecialToken").path("id").asText(null);
            if (first != null && !first.isEmpty()) {
                add.put("bos", first.equals(hasConfig ? bos : first) || first.equals(cls));
            }
            last = single.get(single.size() - 1).path("SpecialToken").path("id").asText(null);
            if (last != null && !last.isEmpty()) {
                if (hasConfig && !last.equals(eos)) {
                    // SpecialVocab then makes the trailing token the EOS and the configured one an EOT (or EOM)
                    throw new IllegalArgumentException("tokenizer.json's post-processor ends every text with " + last
                            + ", not the EOS " + eos + " of tokenizer_config.json: not supported yet");
                }
                add.put("eos", true);
            }
        }
        List<JsonNode> pair = new ArrayList<>();
        processor.path("pair").forEach(pair::add);
        if (pair.isEmpty()) {
            return;
        }
        int start = first != null && !first.isEmpty()
                && first.equals(pair.get(0).path("SpecialToken").path("id").asText(null)) ? 1 : 0;
        int stop = last != null && !last.isEmpty()
                && last.equals(pair.get(pair.size() - 1).path("SpecialToken").path("id").asText(null))
                ? pair.size() - 1 : pair.size();
        if (start >= stop) {
            return;
        }
        List<JsonNode> middle = pair.subList(start, stop);
        String a = middle.get(0).path("Sequence").path("id").asText(null);
        String b = middle.get(middle.size() - 1).path("Sequence").path("id").asText(null);
        if (!"A".equals(a) || !"B".equals(b) || middle.size() <= 2) {
            return;
        }
        List<JsonNode> between = middle.subList(1, middle.size() - 1);
        boolean addSep = false;
        String entry = between.get(0).path("SpecialToken").path("id").asText(null);
        if (entry != null && (entry.equals(sep) || entry.equals(eos)) && (last == null || last.isEmpty())) {
            addSep = true;
        }
        if (between.size() == 2) {
            String second = between.get(1).path("SpecialToken").path("id").asText(null);
            if (second != null && (second.equals(sep) || second.equals(eos))) {
                addSep = true;
            }
        }
        add.put("sep", addSep);
    }

    /** SpecialVocab._parse_normalizer: a Lowercase normalizer, a BertNormalizer's lowercase, inside a Sequence too. */
    private static Boolean lowercase(JsonNode normalizer, Boolean found) {
        switch (normalizer.path("type").asText()) {
            case "Lowercase" -> found = true;
            case "BertNormalizer" -> found = normalizer.has("lowercase") ? normalizer.get("lowercase").asBoolean()
                    : found;
            case "Sequence" -> {
                for (JsonNode inner : normalizer.path("normalizers")) {
                    found = lowercase(inner, found);
                }
            }
            default -> { }
        }
        return found;
    }

    private static void putIds(GgufWriter writer, Map<String, Integer> ids, Map<String, Boolean> add,
            String chatTemplate, Boolean lowercase, JsonNode config, int vocabSize) {
        if (config != null) {
            for (String type : SPECIAL_TYPES) {
                JsonNode id = config.get(type + "_token_id");
                if (id != null && id.isInt()) {
                    setId(ids, type, id.asInt(), vocabSize);
                }
            }
        }
        ids.forEach((type, id) -> {
            if (ID_KEYS.containsKey(type)) {
                writer.putUint32(ID_KEYS.get(type), id);
            }
        });
        add.forEach((type, value) -> {
            if (ADD_HANDLED.contains(type)) {
                writer.putBool("tokenizer.ggml.add_" + type + "_token", value);
            }
        });
        if (chatTemplate != null) {
            writer.putString("tokenizer.chat_template", chatTemplate);
        }
        if (lowercase != null) {
            writer.putBool("tokenizer.ggml.normalizer.lowercase", lowercase);
        }
    }

    /** SpecialVocab._set_special_token: the first id found for a type stays; one outside the vocabulary is skipped. */
    private static void setId(Map<String, Integer> ids, String type, int id, int vocabSize) {
        if (id < 0) {
            throw new IllegalArgumentException("special token " + type + " has the negative id " + id);
        }
        if (id < vocabSize) {
            ids.putIfAbsent(type, id);
        }
    }

    /** A tokenizer_config entry as SpecialVocab reads it: a string, or an AddedToken's content. */
    private static String text(JsonNode tokenizerConfig, String key) {
        if (tokenizerConfig == null) {
            return null;
        }
        JsonNode entry = tokenizerConfig.get(key);
        if (entry == null) {
            return null;
        }
        if (entry.isTextual()) {
            return entry.asText().isEmpty() ? null : entry.asText();
        }
        return entry.isObject() && entry.path("content").isTextual() ? entry.path("content").asText() : null;
    }

    private static String raw(JsonNode tokenizerConfig, String key) {
        JsonNode entry = tokenizerConfig == null ? null : tokenizerConfig.get(key);
        return entry != null && entry.isTextual() && !entry.asText().isEmpty() ? entry.asText() : null;
    }

    private static Path file(Map<String, Path> files, String name) {
        Path dir = files.get(name);
        return dir == null ? null : dir.resolve(name);
    }

    private static JsonNode json(Path file) {
        if (file == null || !Files.isRegularFile(file)) {
            return null;
        }
        try {
            return JSON.readTree(file.toFile());
        } catch (IOException e) {
            throw new IllegalArgumentException(file + ": not valid JSON: " + e.getMessage());
        }
    }
}
