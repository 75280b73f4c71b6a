package io.mixtune.merging;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.lora.adapter.AdapterMerge;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.TreeSet;

/**
 * The files a merged model carries besides its weights: config and generation config from the base (or first) input,
 * the tokenizer's from tokenizer_source, else the same. The inputs must share a vocabulary: embedding rows of models
 * whose token ids mean different tokens do not correspond, and averaging them is silently meaningless.
 */
final class CompanionFiles {
    private static final String TOKENIZER_JSON = "tokenizer.json";
    private static final String SENTENCEPIECE = "tokenizer.model";

    private CompanionFiles() {}

    /**
     * Every input's vocabulary (tokenizer.json's model.vocab and added_tokens, id by id, and its merges) must be the
     * first's; other differences (truncation, padding, normalizer settings, formatting) are the donor's to carry, as
     * mergekit copies the donor's files without comparing. With {@code tokenizerSource}, only what makes the donor's
     * ids fit every input's embedding rows is checked: the same token at every id (merges, which only split text
     * differently, may differ). Inputs with no tokenizer.json are compared by their tokenizer.model, byte for byte.
     */
    static void requireSameTokenizer(List<Path> inputs, Path tokenizerSource) {
        List<Vocabulary> vocabularies = new ArrayList<>();
        List<Path> sentencePieceOnly = new ArrayList<>();
        for (Path input : inputs) {
            if (Files.isRegularFile(input.resolve(TOKENIZER_JSON))) {
                vocabularies.add(Vocabulary.read(input.resolve(TOKENIZER_JSON)));
            } else if (Files.isRegularFile(input.resolve(SENTENCEPIECE))) {
                sentencePieceOnly.add(input.resolve(SENTENCEPIECE));
            }
        }
        Vocabulary donor = tokenizerSource == null || !Files.isRegularFile(tokenizerSource.resolve(TOKENIZER_JSON))
                ? null : Vocabulary.read(tokenizerSource.resolve(TOKENIZER_JSON));
        Vocabulary reference = donor != null ? donor : vocabularies.isEmpty() ? null : vocabularies.get(0);
        for (Vocabulary other : vocabularies) {
            String tokenProblem = reference.firstDifferentToken(other);
            if (tokenProblem != null) {
                throw new IllegalArgumentException(other.file() + ": " + tokenProblem + " in " + reference.file()
                        + (donor != null
                        ? ": tokenizer_source's token ids must mean the same tokens in every model, since mixtune"
                        + " merges embedding rows id by id and cannot rebuild them for another vocabulary as mergekit"
                        + " does; merge models that share one vocabulary"
                        : ": the inputs have different tokenizers, so their embedding rows do not mean the same"
                        + " tokens; merge only models that share one tokenizer"));
            }
            if (donor == null && !reference.merges().equals(other.merges())) {
                throw new IllegalArgumentException(other.file() + ": its merges differ from those in "
                        + reference.file() + " (the same tokens, but text is split into them differently): the inputs"
                        + " have different tokenizers; name the one the merge carries with tokenizer_source");
            }
        }
        for (int i = 1; i < sentencePieceOnly.size(); i++) {
            if (!Arrays.equals(read(sentencePieceOnly.get(0)), read(sentencePieceOnly.get(i)))) {
                throw new IllegalArgumentException(sentencePieceOnly.get(i) + " differs from " + sentencePieceOnly.get(0)
                        + ": the inputs have different tokenizers, so their embedding rows do not mean the same"
                        + " tokens; merge only models that share one tokenizer");
            }
        }
    }

    /** What gives a token id its meaning, from a tokenizer.json. */
    private record Vocabulary(Path file, Map<Integer, String> tokens, List<String> merges) {
        static Vocabulary read(Path file) {
            JsonNode root;
            try {
                root = new ObjectMapper().readTree(file.toFile());
            } catch (IOException e) {
                throw new IllegalArgumentException(file + ": not valid JSON: " + e.getMessage());
            }
            Map<Integer, String> tokens = new TreeMap<>();
            JsonNode vocab = root.path("model").path("vocab");
            if (vocab.isObject()) { // BPE, WordPiece, WordLevel: token -> id
                vocab.properties().forEach(entry -> tokens.put(entry.getValue().asInt(), entry.getKey()));
            } else if (vocab.isArray()) { // Unigram: [token, score] at its id
                for (int id = 0; id < vocab.size(); id++) {
                    tokens.put(id, vocab.get(id).path(0).asText());
                }
            }
            for (JsonNode added : root.path("added_tokens")) {
                tokens.put(added.path("id").asInt(), added.path("content").asText());
            }
            List<String> merges = new ArrayList<>();
            for (JsonNode merge : root.path("model").path("merges")) {
                // tokenizers writes a merge as "a b" or, since 0.20, as ["a", "b"]
                merges.add(merge.isArray() ? merge.path(0).asText() + " " + merge.path(1).asText() : merge.asText());
            }
            return new Vocabulary(file, tokens, merges);
        }

        /** "id N is 'x' but 'y'" for the lowest id whose token differs (or that one of them lacks), or null. */
        String firstDifferentToken(Vocabulary other) {
            TreeSet<Integer> ids = new TreeSet<>(tokens.keySet());
            ids.addAll(other.tokens().keySet());
            for (int id : ids) {
                String mine = tokens.get(id);
                String theirs = other.tokens().get(id);
                if (!Objects.equals(mine, theirs)) {
                    return "id " + id + " is " + shown(theirs) + " but " + shown(mine) + " (vocabularies of "
                            + other.tokens().size() + " and " + tokens.size() + " tokens)";
                }
            }
            return null;
        }

        private static String shown(String token) {
            return token == null ? "absent" : "'" + token + "'";
        }
    }

    /**
     * Copies the model files, each from the first input that has it, and the tokenizer's, picked by
     * {@link AdapterMerge#tokenizerSources} from {@code tokenizerSource} (mergekit's tokenizer_source) first, when
     * given, then the inputs in priority.
     */
    static void copy(List<Path> inputsInPriority, Path out, Path tokenizerSource) {
        for (String file : AdapterMerge.MODEL_FILES) {
            inputsInPriority.stream().filter(input -> Files.isRegularFile(input.resolve(file))).findFirst()
                    .ifPresent(input -> copyFile(input.resolve(file), out));
        }
        List<Path> tokenizerDonors = new ArrayList<>(inputsInPriority);
        if (tokenizerSource != null) {
            tokenizerDonors.add(0, tokenizerSource);
        }
        copyTokenizer(tokenizerDonors, out);
    }

    /**
     * The tokenizer files as {@link AdapterMerge#tokenizerSources} picks them: for merged adapters the first member's
     * (mixtune's training writes tokenizer.json and tokenizer_config.json, with the chat template it trained with,
     * beside an adapter), so that the merge tokenizes and renders chats as its first member did.
     */
    static void copyTokenizer(List<Path> dirsInPriority, Path out) {
        AdapterMerge.tokenizerSources(dirsInPriority).forEach((file, dir) -> copyFile(dir.resolve(file), out));
    }

    private static void copyFile(Path file, Path out) {
        try {
            Files.copy(file, out.resolve(file.getFileName().toString()));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot copy " + file + " to " + out + ": " + e.getMessage(), e);
        }
    }

    static byte[] read(Path file) {
        try {
            return Files.readAllBytes(file);
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": cannot be read: " + e.getMessage(), e);
        }
    }
}
