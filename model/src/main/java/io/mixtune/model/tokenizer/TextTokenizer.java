package io.mixtune.model.tokenizer;

import ai.djl.huggingface.tokenizers.Encoding;
import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import ai.djl.huggingface.tokenizers.jni.CharSpan;
import ai.djl.huggingface.tokenizers.jni.TokenizersLibrary;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * A model's Hugging Face {@code tokenizer.json}, read by DJL's binding of the Rust tokenizers library (offline: the
 * native library ships in the jar). Special tokens are never added implicitly: callers say whether they want BOS, and
 * templates add EOS by id.
 *
 * <p>Text is text: {@link #encode} never turns characters into a special token, whatever the tokenizer.json declares,
 * so a chat that quotes {@code "</s>"}, {@code "<s>"}, {@code "[INST]"} or {@code "<|im_start|>"} gets the pieces the
 * tokenizer's model gives for those characters (transformers' {@code split_special_tokens=True}; SentencePiece, which
 * Mistral's reference tokenizer is, never matches control pieces in text either). Control tokens come only from a
 * template: it passes its own strings through {@link #control}, which marks the special tokens in them, and BOS/EOS
 * by id. mixtune's bundled Mistral v1 tokenizer.json declares no added tokens (interop/convert_tokenizer.py), so there
 * the two agree by construction; a Hub tokenizer.json lists {@code <unk>}, {@code <s>}, {@code </s>} (and often
 * ChatML's or [INST]) as special added tokens, which the tokenizers library matches in raw text before anything else.
 *
 * <p>How, without {@code encode_special_tokens} (DJL 0.35.1 does not expose it): a second instance is read from the
 * same tokenizer.json with every special added token replaced by a marker, a string of Unicode noncharacters around a
 * random nonce drawn per instance, that text cannot hold by chance; {@link #control} writes the markers, and the
 * marker ids map back to the special ids. The tokenizers library takes an added token's id from the vocabulary or
 * else numbers it after the last one, so a special token the model's vocabulary holds ({@code <s>} = 1) is dropped and
 * its marker appended at the end, and one it does not ({@code <|im_start|>} = 32000) is renamed in place; every id is
 * checked after loading. Splits around markers are the splits around the special tokens, so the ids equal
 * tokenizing the rendered template with its special tokens and the user's text without.
 */
public final class TextTokenizer implements AutoCloseable {
    private static final Map<String, String> OPTIONS = Map.of("addSpecialTokens", "false", "truncation", "false",
            "padding", "false");
    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * The BOS id of a model whose tokenizer has none (config.json's bos_token_id null, tokenizer_config.json's
     * bos_token null): no id matches it, and {@link #encode} with BOS does what the tokenizer.json's post-processor
     * says, as transformers' plain {@code tokenizer(text)} does.
     */
    public static final long NO_BOS = -1;

    /** The tokenizer.json as written: decoding, and the ids of special tokens. */
    private final HuggingFaceTokenizer tokenizer;
    /** The one that encodes: the same file with special tokens matched only as markers; {@code tokenizer} if none. */
    private final HuggingFaceTokenizer textEncoder;
    /** The special tokens' texts, longest first, and the marker {@link #control} writes for each. */
    private final List<Map.Entry<String, String>> markers;
    /** Ids from {@code firstMovedMarkerId} on are markers appended at the end; they stand for these ids. */
    private final long firstMovedMarkerId;
    private final long[] movedMarkerIds;
    private final long bosId;
    private final long eosId;
    /** The ids of "\n" encoded alone, which a continuation encode strips from its front. */
    private final long[] newlineIds;
    /**
     * Whether an encode starts the text with a word-start marker (SentencePiece's dummy prefix, Metaspace's "▁") that
     * a piece in the middle of a text does not get; byte-level BPEs (tekken) add none.
     */
    private final boolean marksWordStart;

    private TextTokenizer(HuggingFaceTokenizer tokenizer, HuggingFaceTokenizer textEncoder,
            List<Map.Entry<String, String>> markers, long firstMovedMarkerId, long[] movedMarkerIds, long bosId,
            long eosId) {
        this.tokenizer = tokenizer;
        this.textEncoder = textEncoder;
        this.markers = markers;
        this.firstMovedMarkerId = firstMovedMarkerId;
        this.movedMarkerIds = movedMarkerIds;
        this.bosId = bosId;
        this.eosId = eosId;
        this.newlineIds = ids("\n");
        long[] letter = ids("a");
        long[] apart = Arrays.copyOf(newlineIds, newlineIds.length + letter.length);
        System.arraycopy(letter, 0, apart, newlineIds.length, letter.length);
        this.marksWordStart = !Arrays.equals(apart, ids("\na"));
    }

    /** @param tokenizerJson a tokenizer.json file, or a model directory holding one */
    public static TextTokenizer open(Path tokenizerJson, long bosId, long eosId) {
        Path file = Files.isDirectory(tokenizerJson) ? tokenizerJson.resolve("tokenizer.json") : tokenizerJson;
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException(file + ": no tokenizer.json (give token ids with --prompt-ids, or add "
                    + "the model's tokenizer.json)");
        }
        byte[] json;
        try {
            json = Files.readAllBytes(file);
        } catch (IOException e) {
            throw new IllegalArgumentException(file + ": cannot be read: " + e.getMessage(), e);
        }
        return read(new ByteArrayInputStream(json), file.toString(), bosId, eosId);
    }

    /** A tokenizer.json shipped on the classpath, such as {@code ModelPreset.MISTRAL_V1_TOKENIZER}. */
    public static TextTokenizer openResource(String resource, long bosId, long eosId) {
        try (InputStream in = TextTokenizer.class.getClassLoader().getResourceAsStream(resource)) {
            if (in == null) {
                throw new IllegalArgumentException("no tokenizer resource " + resource + " on the classpath");
            }
            return read(in, resource, bosId, eosId);
        } catch (IOException e) {
            throw new IllegalArgumentException(resource + ": cannot be read: " + e.getMessage(), e);
        }
    }

    /** A tokenizer.json from a stream (bytes already in memory, a resource); {@code name} says which in errors. */
    public static TextTokenizer read(InputStream in, String name, long bosId, long eosId) {
        byte[] json;
        JsonNode root = null;
        HuggingFaceTokenizer tokenizer;
        try {
            json = in.readAllBytes();
            root = JSON.readTree(json);
            // The tokenizer's own post-processor would add BOS; we add it explicitly so templates control it.
            tokenizer = HuggingFaceTokenizer.newInstance(new ByteArrayInputStream(json), OPTIONS);
        } catch (IOException | RuntimeException e) {
            List<String> unknown = root == null ? List.of() : unknownComponentTypes(root);
            if (!unknown.isEmpty()) {
                String key = unknown.get(0).substring(0, unknown.get(0).indexOf(' '));
                throw new IllegalArgumentException(name + ": " + String.join(", ", unknown) + " unknown to the"
                        + " tokenizers library mixtune runs (" + TOKENIZERS_LIBRARY + "), whose " + key + " types are "
                        + String.join(", ", new java.util.TreeSet<>(KNOWN_TYPES.get(key))), e);
            }
            throw new IllegalArgumentException(name + ": not a tokenizer.json the tokenizers library can read: "
                    + e.getMessage(), e);
        }
        try {
            return withTextEncoder(tokenizer, root, name, bosId, eosId);
        } catch (RuntimeException e) {
            tokenizer.close();
            throw e;
        }
    }

    /** The native library DJL 0.35.1 bundles; its serde errors name no type ("did not match any variant"). */
    private static final String TOKENIZERS_LIBRARY = "tokenizers 0.21.4, DJL 0.35.1";

    /** The component types that library reads, by tokenizer.json key (its NormalizerWrapper etc.). */
    private static final Map<String, Set<String>> KNOWN_TYPES = new TreeMap<>(Map.of(
            "model", Set.of("BPE", "WordPiece", "WordLevel", "Unigram"),
            "normalizer", Set.of("BertNormalizer", "Strip", "StripAccents", "NFC", "NFD", "NFKC", "NFKD", "Sequence",
                    "Lowercase", "Nmt", "Precompiled", "Replace", "Prepend", "ByteLevel"),
            "pre_tokenizer", Set.of("BertPreTokenizer", "ByteLevel", "CharDelimiterSplit", "Metaspace", "Whitespace",
                    "Sequence", "Split", "Punctuation", "WhitespaceSplit", "Digits", "UnicodeScripts"),
            "decoder", Set.of("BPEDecoder", "ByteLevel", "WordPiece", "Metaspace", "CTC", "Sequence", "Replace", "Fuse",
                    "Strip", "ByteFallback"),
            "post_processor", Set.of("RobertaProcessing", "BertProcessing", "ByteLevel", "TemplateProcessing",
                    "Sequence")));

    /** Where a Sequence of each component keeps its members. */
    private static final Map<String, String> SEQUENCE_MEMBERS = Map.of("normalizer", "normalizers", "pre_tokenizer",
            "pretokenizers", "decoder", "decoders", "post_processor", "processors");

    /** "pre_tokenizer type \"X\"" for each component (Sequence members included) of a type the library lacks. */
    private static List<String> unknownComponentTypes(JsonNode root) {
        List<String> unknown = new ArrayList<>();
        KNOWN_TYPES.forEach((key, known) -> collectUnknown(key, root.path(key), known, unknown));
        return unknown;
    }

    private static void collectUnknown(String key, JsonNode component, Set<String> known, List<String> unknown) {
        if (!component.isObject() || !component.has("type")) {
            return;
        }
        String type = component.get("type").asText();
        if (!known.contains(type)) {
            unknown.add(key + " type \"" + type + "\"");
        } else if (type.equals("Sequence") && SEQUENCE_MEMBERS.containsKey(key)) {
            component.path(SEQUENCE_MEMBERS.get(key)).forEach(member -> collectUnknown(key, member, known, unknown));
        }
    }

    /** The marker instance of the class comment, checked id by id against the tokenizer as written. */
    private static TextTokenizer withTextEncoder(HuggingFaceTokenizer tokenizer, JsonNode root, String name,
            long bosId, long eosId) {
        JsonNode added = root.path("added_tokens");
        Set<JsonNode> specials = Collections.newSetFromMap(new IdentityHashMap<>());
        added.forEach(token -> {
            if (token.path("special").asBoolean(false) && !token.path("content").asText("").isEmpty()) {
                specials.add(token);
            }
        });
        if (specials.isEmpty()) {
            return new TextTokenizer(tokenizer, tokenizer, List.of(), Long.MAX_VALUE, new long[0], bosId, eosId);
        }
        // Noncharacters (U+FDD0..U+FDEF) are for a program's internal use and never interchanged as text; the nonce
        // keeps even a file that holds them from spelling a marker.
        byte[] nonce = new byte[8];
        new SecureRandom().nextBytes(nonce);
        String markerPrefix = "\uFDD0" + HexFormat.of().formatHex(nonce) + ":";
        JsonNode vocab = root.path("model").path("vocab");
        ObjectNode rewritten = ((ObjectNode) root).deepCopy();
        ArrayNode kept = JSON.createArrayNode();
        List<ObjectNode> moved = new ArrayList<>();
        List<Map.Entry<String, String>> markers = new ArrayList<>();
        List<String> movedMarkers = new ArrayList<>();
        List<Long> movedIds = new ArrayList<>();
        Map<String, Long> inPlaceIds = new LinkedHashMap<>(); // marker -> the special id it keeps
        for (JsonNode token : added) {
            if (!specials.contains(token)) {
                kept.add(token);
                continue;
            }
            String content = token.get("content").asText();
            long[] specialIds = ids(tokenizer, content);
            if (specialIds.length != 1) {
                throw new IllegalArgumentException(name + ": special token \"" + content + "\" does not encode to "
                        + "one id (" + Arrays.toString(specialIds) + ")");
            }
            String marker = markerPrefix + markers.size() + "\uFDD1";
            markers.add(Map.entry(content, marker));
            ObjectNode twin = ((ObjectNode) token).deepCopy();
            twin.put("content", marker);
            twin.put("normalized", false);
            if (inModelVocabulary(vocab, content)) {
                moved.add(twin);
                movedMarkers.add(marker);
                movedIds.add(specialIds[0]);
            } else {
                kept.add(twin);
                inPlaceIds.put(marker, specialIds[0]);
            }
        }
        moved.forEach(kept::add);
        rewritten.set("added_tokens", kept);
        HuggingFaceTokenizer textEncoder;
        try {
            textEncoder = HuggingFaceTokenizer.newInstance(
                    new ByteArrayInputStream(JSON.writeValueAsBytes(rewritten)), OPTIONS);
        } catch (IOException | RuntimeException e) {
            throw new IllegalArgumentException(name + ": cannot keep its special tokens out of text: " + e.getMessage(),
                    e);
        }
        try {
            long firstMoved = Long.MAX_VALUE;
            long[] movedMarkerIds = new long[movedIds.size()];
            for (int i = 0; i < movedIds.size(); i++) {
                long[] markerIds = ids(textEncoder, movedMarkers.get(i));
                if (i == 0 && markerIds.length == 1) {
                    firstMoved = markerIds[0];
                }
                // Appended last, in order: consecutive ids after every other one.
                if (markerIds.length != 1 || markerIds[0] != firstMoved + i) {
                    throw mismatch(name, specialText(markers, movedMarkers.get(i)), Arrays.toString(markerIds));
                }
                movedMarkerIds[i] = movedIds.get(i);
            }
            for (Map.Entry<String, Long> place : inPlaceIds.entrySet()) {
                long[] markerIds = ids(textEncoder, place.getKey());
                if (markerIds.length != 1 || markerIds[0] != place.getValue()) {
                    throw mismatch(name, specialText(markers, place.getKey()), Arrays.toString(markerIds));
                }
            }
            for (JsonNode token : kept) {
                String content = token.path("content").asText();
                if (!content.startsWith(markerPrefix)
                        && !Arrays.equals(ids(tokenizer, content), ids(textEncoder, content))) {
                    throw mismatch(name, content, Arrays.toString(ids(textEncoder, content)));
                }
            }
            List<Map.Entry<String, String>> longestFirst = new ArrayList<>(markers);
            longestFirst.sort(Comparator.comparingInt((Map.Entry<String, String> e) -> e.getKey().length()).reversed());
            return new TextTokenizer(tokenizer, textEncoder, List.copyOf(longestFirst), firstMoved, movedMarkerIds,
                    bosId, eosId);
        } catch (RuntimeException e) {
            textEncoder.close();
            throw e;
        }
    }

    private static IllegalArgumentException mismatch(String name, String token, String got) {
        return new IllegalArgumentException(name + ": cannot keep its special tokens out of text: with them marked, \""
                + token + "\" encodes to " + got + " (a tokenizer.json layout mixtune does not know)");
    }

    private static String specialText(List<Map.Entry<String, String>> markers, String marker) {
        return markers.stream().filter(e -> e.getValue().equals(marker)).findFirst().orElseThrow().getKey();
    }

    /**
     * One more than the largest id a tokenizer.json can give: its model's vocabulary (a BPE or WordPiece map, a
     * Unigram list) and its added tokens. A model whose embedding has fewer rows cannot take its ids.
     */
    public static long idLimit(byte[] tokenizerJson, String name) {
        JsonNode root;
        try {
            root = JSON.readTree(tokenizerJson);
        } catch (IOException e) {
            throw new IllegalArgumentException(name + ": not a tokenizer.json (invalid JSON: " + e.getMessage() + ")", e);
        }
        JsonNode vocab = root.path("model").path("vocab");
        long limit = 0;
        if (vocab.isObject()) {
            for (JsonNode id : (Iterable<JsonNode>) vocab::elements) {
                limit = Math.max(limit, id.asLong() + 1);
            }
        } else if (vocab.isArray()) {
            limit = vocab.size();
        }
        for (JsonNode token : root.path("added_tokens")) {
            limit = Math.max(limit, token.path("id").asLong() + 1);
        }
        return limit;
    }

    /**
     * Token to id, as a tokenizer.json defines it: its model's vocabulary (a BPE or WordPiece map; a Unigram list,
     * a piece's id being its place) and its added tokens. Two tokenizers with equal maps turn text into the same ids
     * whatever their files are called.
     */
    public static Map<String, Long> vocabulary(byte[] tokenizerJson, String name) {
        JsonNode root;
        try {
            root = JSON.readTree(tokenizerJson);
        } catch (IOException e) {
            throw new IllegalArgumentException(name + ": not a tokenizer.json (invalid JSON: " + e.getMessage() + ")", e);
        }
        Map<String, Long> vocabulary = new TreeMap<>();
        JsonNode vocab = root.path("model").path("vocab");
        if (vocab.isObject()) {
            vocab.fields().forEachRemaining(entry -> vocabulary.put(entry.getKey(), entry.getValue().asLong()));
        } else if (vocab.isArray()) {
            for (int i = 0; i < vocab.size(); i++) {
                vocabulary.put(vocab.get(i).path(0).asText(), (long) i);
            }
        }
        for (JsonNode token : root.path("added_tokens")) {
            vocabulary.put(token.path("content").asText(), token.path("id").asLong());
        }
        return vocabulary;
    }

    /** Whether the model's own vocabulary (BPE/WordPiece map, Unigram list) holds {@code content}. */
    private static boolean inModelVocabulary(JsonNode vocab, String content) {
        if (vocab.isObject()) {
            return vocab.has(content);
        }
        for (JsonNode piece : vocab) {
            if (piece.isArray() && content.equals(piece.path(0).asText(null))) {
                return true;
            }
        }
        return false;
    }

    /**
     * A template's own text with the tokenizer's special tokens in it marked, so that {@link #encode} gives their ids
     * there. Only a template's strings go through here, never a message: in text a special token stays text.
     */
    public String control(String templateText) {
        if (markers.isEmpty() || templateText.isEmpty()) {
            return templateText;
        }
        StringBuilder marked = new StringBuilder(templateText.length());
        int at = 0;
        outer:
        while (at < templateText.length()) {
            for (Map.Entry<String, String> marker : markers) { // longest first, as the tokenizers library matches
                if (templateText.startsWith(marker.getKey(), at)) {
                    marked.append(marker.getValue());
                    at += marker.getKey().length();
                    continue outer;
                }
            }
            marked.append(templateText.charAt(at++));
        }
        return marked.toString();
    }

    /** The EOS id the tokenizer was opened with. */
    public long eosId() {
        return eosId;
    }

    /** The EOS token's text ("</s>"): what transformers' {@code tokenizer.eos_token} is, which TRL appends to text. */
    public String eosText() {
        return tokenizer.decode(new long[] {eosId}, false);
    }

    /** The texts of the special tokens the tokenizer.json declares, longest first (what {@link #control} marks). */
    public List<String> specialTokens() {
        return markers.stream().map(Map.Entry::getKey).toList();
    }

    /**
     * Token ids of {@code text}, with the BOS id in front when asked. Special tokens only where {@link #control}
     * marked them. With {@link #NO_BOS}, a text "with BOS" gets what tokenizer.json's post-processor adds (transformers'
     * {@code tokenizer(text)}, which TRL's standard-format DPO and a text prompt use): {@code <s>} where its
     * TemplateProcessing writes it although the model names no BOS, nothing where there is no post-processor.
     */
    public long[] encode(String text, boolean addBos) {
        if (addBos && bosId == NO_BOS) {
            return ids(text, true);
        }
        long[] ids = ids(text);
        if (!addBos) {
            return ids;
        }
        long[] withBos = new long[ids.length + 1];
        withBos[0] = bosId;
        System.arraycopy(ids, 0, withBos, 1, ids.length);
        return withBos;
    }

    /**
     * Token ids of {@code text} as it tokenizes in the middle of a longer text: without the word-start marker
     * (SentencePiece's dummy prefix) that every separate encode puts in front. Encodes "\n" + text and drops the ids
     * of the "\n" (a byte token that merges with nothing), so templates can tokenize piece by piece and still get the
     * ids of the whole string. A tokenizer that marks no word start encodes the text as it is: there a newline in
     * front could merge with one that begins the text (tekken's "\n\n").
     */
    public long[] encodeContinuation(String text) {
        if (!marksWordStart) {
            return ids(text);
        }
        long[] ids = ids("\n" + text);
        for (int i = 0; i < newlineIds.length; i++) {
            if (i >= ids.length || ids[i] != newlineIds[i]) {
                throw new IllegalStateException("this tokenizer merges a newline with what follows it; continuation "
                        + "encoding needs it to stand alone");
            }
        }
        return Arrays.copyOfRange(ids, newlineIds.length, ids.length);
    }

    /**
     * Token ids of {@code text} (as {@link #encode} without BOS gives them) with the [start, end) character range of
     * each token in {@code text}, in UTF-16 indices: where a chat template's rendered text was tokenized at once, which
     * tokens a character span covers (transformers' {@code char_to_token}).
     */
    public Spans encodeWithSpans(String text) {
        Encoding encoding = textEncoder.encode(text);
        long[] ids = encoding.getIds();
        CharSpan[] spans = encoding.getCharTokenSpans();
        int[] utf16 = utf16Index(text);
        int[] starts = new int[ids.length];
        int[] ends = new int[ids.length];
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] >= firstMovedMarkerId) {
                ids[i] = movedMarkerIds[(int) (ids[i] - firstMovedMarkerId)];
            }
            starts[i] = utf16[Math.min(spans[i].getStart(), utf16.length - 1)];
            ends[i] = utf16[Math.min(spans[i].getEnd(), utf16.length - 1)];
        }
        return new Spans(ids, starts, ends);
    }

    /** Token ids and, per token, the [start, end) of the characters it came from. */
    public record Spans(long[] ids, int[] starts, int[] ends) {}

    /** The UTF-16 index of each code point of text (the tokenizers library counts code points), and the length. */
    private static int[] utf16Index(String text) {
        int[] index = new int[text.codePointCount(0, text.length()) + 1];
        int at = 0;
        for (int i = 0; i < index.length - 1; i++) {
            index[i] = at;
            at += Character.charCount(text.codePointAt(at));
        }
        index[index.length - 1] = text.length();
        return index;
    }

    /** The ids from the text encoder, markers turned back into the special ids they stand for. */
    private long[] ids(String text) {
        return ids(text, false);
    }

    /** As {@link #ids(String)}, with the post-processor's special tokens where asked. */
    private long[] ids(String text, boolean postProcessed) {
        long[] ids = ids(textEncoder, text, postProcessed);
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] >= firstMovedMarkerId) {
                ids[i] = movedMarkerIds[(int) (ids[i] - firstMovedMarkerId)];
            }
        }
        return ids;
    }

    /**
     * The ids alone, straight from the native encoding: HuggingFaceTokenizer.encode also copies out the token strings,
     * type ids, masks and character spans, which made it 2.2x slower (377k against 820k tokens/s on the sample chats).
     */
    private static long[] ids(HuggingFaceTokenizer tokenizer, String text) {
        return ids(tokenizer, text, false);
    }

    private static long[] ids(HuggingFaceTokenizer tokenizer, String text, boolean postProcessed) {
        long encoding = TokenizersLibrary.LIB.encode(tokenizer.getHandle(), text, postProcessed);
        try {
            return TokenizersLibrary.LIB.getTokenIds(encoding);
        } finally {
            TokenizersLibrary.LIB.deleteEncoding(encoding);
        }
    }

    /**
     * Text of the ids, BOS, EOS and the tokenizer's special tokens left out (sentencepiece's decode drops its control
     * pieces the same way).
     */
    public String decode(long[] ids) {
        return tokenizer.decode(Arrays.stream(ids).filter(id -> id != bosId && id != eosId).toArray(), true);
    }

    /** The text of one token as the tokenizer decodes it alone, special tokens included (EOS's {@code </s>}). */
    public String tokenText(long id) {
        return tokenizer.decode(new long[] {id}, false);
    }

    @Override
    public void close() {
        if (textEncoder != tokenizer) {
            textEncoder.close();
        }
        tokenizer.close();
    }
}
