package io.mixtune.model.tokenizer;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import ai.djl.huggingface.tokenizers.jni.TokenizersLibrary;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;

/**
 * A model's Hugging Face {@code tokenizer.json}, read by DJL's binding of the Rust tokenizers library (offline: the
 * native library ships in the jar). Special tokens are never added implicitly: callers say whether they want BOS, and
 * templates add EOS by id.
 *
 * <p>BOS and EOS are known by id, not by text: mixtune's Mistral v1 tokenizer.json declares no added tokens, so that
 * {@code "</s>"} typed in a message tokenizes as text, as sentencepiece does it (interop/convert_tokenizer.py), and the
 * tokenizers library then no longer knows them as special.
 */
public final class TextTokenizer implements AutoCloseable {
    private final HuggingFaceTokenizer tokenizer;
    private final long bosId;
    private final long eosId;
    /** The ids of "\n" encoded alone, which a continuation encode strips from its front. */
    private final long[] newlineIds;

    private TextTokenizer(HuggingFaceTokenizer tokenizer, long bosId, long eosId) {
        this.tokenizer = tokenizer;
        this.bosId = bosId;
        this.eosId = eosId;
        this.newlineIds = ids("\n");
    }

    /** @param tokenizerJson a tokenizer.json file, or a model directory holding one */
    public static TextTokenizer open(Path tokenizerJson, long bosId, long eosId) {
        Path file = Files.isDirectory(tokenizerJson) ? tokenizerJson.resolve("tokenizer.json") : tokenizerJson;
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException(file + ": no tokenizer.json (give token ids with --prompt-ids, or add "
                    + "the model's tokenizer.json)");
        }
        try {
            // The tokenizer's own post-processor would add BOS; we add it explicitly so templates control it.
            HuggingFaceTokenizer tokenizer = HuggingFaceTokenizer.newInstance(file,
                    Map.of("addSpecialTokens", "false", "truncation", "false", "padding", "false"));
            return new TextTokenizer(tokenizer, bosId, eosId);
        } catch (IOException | RuntimeException e) {
            throw new IllegalArgumentException(file + ": not a tokenizer.json the tokenizers library can read: "
                    + e.getMessage(), e);
        }
    }

    /** A tokenizer.json shipped on the classpath, such as {@code ModelPreset.MISTRAL_V1_TOKENIZER}. */
    public static TextTokenizer openResource(String resource, long bosId, long eosId) {
        try (java.io.InputStream in = TextTokenizer.class.getClassLoader().getResourceAsStream(resource)) {
            if (in == null) {
                throw new IllegalArgumentException("no tokenizer resource " + resource + " on the classpath");
            }
            return read(in, resource, bosId, eosId);
        } catch (IOException e) {
            throw new IllegalArgumentException(resource + ": cannot be read: " + e.getMessage(), e);
        }
    }

    /** A tokenizer.json from a stream (bytes already in memory, a resource); {@code name} says which in errors. */
    public static TextTokenizer read(java.io.InputStream json, String name, long bosId, long eosId) {
        try {
            return new TextTokenizer(HuggingFaceTokenizer.newInstance(json,
                    Map.of("addSpecialTokens", "false", "truncation", "false", "padding", "false")), bosId, eosId);
        } catch (IOException | RuntimeException e) {
            throw new IllegalArgumentException(name + ": not a tokenizer.json the tokenizers library can read: "
                    + e.getMessage(), e);
        }
    }

    /** Token ids of {@code text}, with the BOS id in front when asked. */
    public long[] encode(String text, boolean addBos) {
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
     * ids of the whole string.
     */
    public long[] encodeContinuation(String text) {
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
     * The ids alone, straight from the native encoding: HuggingFaceTokenizer.encode also copies out the token strings,
     * type ids, masks and character spans, which made it 2.2x slower (377k against 820k tokens/s on the sample chats).
     */
    private long[] ids(String text) {
        long encoding = TokenizersLibrary.LIB.encode(tokenizer.getHandle(), text, false);
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

    @Override
    public void close() {
        tokenizer.close();
    }
}
