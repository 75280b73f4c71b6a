package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.merging.gguf.GgufReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `mixtune export-gguf` of a model whose tokenizer is tokenizer.json alone (no tokenizer.model) writes what llama.cpp's
 * convert_hf_to_gguf.py writes, byte for byte: a Mistral-Nemo-shaped checkpoint (head_dim 16 where hidden / heads is 8,
 * vocabulary 131072) with a Tekken tokenizer.json cut from Mistral-Nemo's (the converter names its pre-tokenizer
 * "tekken" by the ids of its check text), a Hub-style tokenizer_config.json and template (golden/gguf/tekken/,
 * golden/gguf/converter-vocab.json, interop/make_gguf_vocab_goldens.py). A byte-level BPE whose pre-tokenizer the
 * converter does not know is refused as the converter refuses it.
 */
class ExportGgufVocabTest {
    private static final Path GOLDEN = Path.of("src/test/resources/golden/gguf/converter-vocab.json");
    private static final Path TEKKEN = Path.of("src/test/resources/golden/gguf/tekken");
    private static final Path TEKKEN_STYLE = Path.of("../model/src/test/resources/golden/tokenizer/tekken-style.json");
    private static final List<String> BUNDLED = List.of("tokenizer.json", "tokenizer.model", "tokenizer_config.json");

    private static JsonNode golden() throws Exception {
        return new ObjectMapper().readTree(Files.readString(GOLDEN));
    }

    private static JsonNode goldenCase(JsonNode golden, String name) {
        for (JsonNode entry : golden.path("cases")) {
            if (entry.path("name").asText().equals(name)) {
                return entry;
            }
        }
        throw new AssertionError("no golden case " + name);
    }

    /** The golden's checkpoint in {@code model}, its tokenizer files only those given (no tokenizer.model). */
    private static void checkpoint(JsonNode golden, String name, Path model, Map<String, Path> files)
            throws Exception {
        ExportGgufKQuantTest.writeWide(golden.path("checkpoints").path(name), model);
        for (String bundled : BUNDLED) {
            Files.delete(model.resolve(bundled));
        }
        for (Map.Entry<String, Path> file : files.entrySet()) {
            Files.copy(file.getValue(), model.resolve(file.getKey()));
        }
    }

    /** golden/gguf/tekken's files by name. */
    private static Map<String, Path> tekkenFiles() throws Exception {
        try (Stream<Path> files = Files.list(TEKKEN)) {
            return files.collect(Collectors.toMap(file -> file.getFileName().toString(), file -> file));
        }
    }

    /** The golden's checkpoint {@code name} with {@code files}, exported by `mixtune export-gguf` as {@code type}. */
    private static Path export(JsonNode golden, String name, Map<String, Path> files, String type, Path dir)
            throws Exception {
        Path model = dir.resolve(name);
        checkpoint(golden, name, model, files);
        Path out = dir.resolve(name + "-" + type + ".gguf");
        MixtuneCliTest.Result result = MixtuneCliTest.run("export-gguf", "--model", model.toString(), "--out",
                out.toString(), "--type", type);
        assertEquals(0, result.code(), result.err());
        return out;
    }

    @Test
    void aTekkenVocabularyIsWrittenAsTheConverterWritesIt(@TempDir Path dir) throws Exception {
        JsonNode golden = golden();
        JsonNode entry = goldenCase(golden, "nemo-style-tekken-f16");
        Path out = export(golden, "nemo-style", tekkenFiles(), entry.path("outtype").asText(), dir);

        GgufReader reader = GgufReader.open(out);
        assertEquals("gpt2", reader.metadata().get("tokenizer.ggml.model").value());
        assertEquals("tekken", reader.metadata().get("tokenizer.ggml.pre").value());
        // Mistral-Nemo's head_dim, not hidden / heads: attention key/value length and the rotary dimensions
        assertEquals(16L, reader.metadata().get("llama.attention.key_length").value());
        assertEquals(16L, reader.metadata().get("llama.attention.value_length").value());
        assertEquals(16L, reader.metadata().get("llama.rope.dimension_count").value());
        List<?> types = (List<?>) reader.metadata().get("tokenizer.ggml.token_type").value();
        // <s> special: control; <|tool|> not special but looks it: control; "\u2581[CALL]": user-defined; ids the
        // vocabulary skips: unused; a byte-level token: normal
        assertEquals(List.of(3L, 3L, 4L, 5L), List.of(types.get(1), types.get(20), types.get(21), types.get(22)));
        assertEquals(1L, types.get(1032));
        assertEquals(" [CALL]", ((List<?>) reader.metadata().get("tokenizer.ggml.tokens").value()).get(21));
        ExportGgufTest.assertConverterFile(entry, out);
    }

    /**
     * A token tokenizer_config.json names (pad_token here; bos ... mask, additional/extra special tokens alike) is
     * special in the tokenizer transformers loads, whatever tokenizer.json's flag says (TokenizersBackend.__init__ and
     * _post_init add the named tokens as special), so the converter's get_vocab_base types it control and keeps its
     * U+2581. Found in review: mixtune read the flag from tokenizer.json alone and wrote user-defined " [CALL]".
     */
    @Test
    void aTokenTokenizerConfigNamesIsControlAsTransformersMakesIt(@TempDir Path dir) throws Exception {
        Map<String, Path> files = new HashMap<>(tekkenFiles());
        Path config = dir.resolve("tokenizer_config.json");
        Files.writeString(config, Files.readString(TEKKEN.resolve("tokenizer_config.json"))
                .replace("\"pad_token\": \"<pad>\"", "\"pad_token\": \"\u2581[CALL]\""));
        files.put("tokenizer_config.json", config);
        Path out = export(golden(), "nemo-style", files, "f16", dir);

        GgufReader reader = GgufReader.open(out);
        assertEquals("tekken", reader.metadata().get("tokenizer.ggml.pre").value());
        assertEquals(3L, ((List<?>) reader.metadata().get("tokenizer.ggml.token_type").value()).get(21));
        assertEquals("\u2581[CALL]", ((List<?>) reader.metadata().get("tokenizer.ggml.tokens").value()).get(21));
        assertEquals(21L, reader.metadata().get("tokenizer.ggml.padding_token_id").value());
    }

    /**
     * tokenizer_config.json's added_tokens_decoder marking an added token special (a common hand fix) wins over
     * tokenizer.json's "special": false in the tokenizer transformers loads (TokenizersBackend.__init__ re-adds an
     * entry that differs), so the converter types it control. Found in review, checked in transformers 5.18.
     */
    @Test
    void anAddedTokenTokenizerConfigMarksSpecialIsControl(@TempDir Path dir) throws Exception {
        Map<String, Path> files = new HashMap<>(tekkenFiles());
        Path config = dir.resolve("tokenizer_config.json");
        Files.writeString(config, Files.readString(TEKKEN.resolve("tokenizer_config.json")).replace("{",
                "{\"added_tokens_decoder\": {\"21\": {\"content\": \"\u2581[CALL]\", \"lstrip\": false, \"normalized\":"
                + " false, \"rstrip\": false, \"single_word\": false, \"special\": true}},"));
        files.put("tokenizer_config.json", config);
        Path out = export(golden(), "nemo-style", files, "f16", dir);

        GgufReader reader = GgufReader.open(out);
        assertEquals(3L, ((List<?>) reader.metadata().get("tokenizer.ggml.token_type").value()).get(21));
        assertEquals("\u2581[CALL]", ((List<?>) reader.metadata().get("tokenizer.ggml.tokens").value()).get(21));
    }

    /**
     * A Mixtral whose config.json has no head_dim (the Hub's Mixtral-8x7B): transformers' MixtralConfig leaves it None,
     * where MistralConfig fills in hidden / heads, so the converter writes no attention key/value length.
     */
    @Test
    void aMixtralWithoutHeadDimGetsNoKeyLengthAsInTheConverter(@TempDir Path dir) throws Exception {
        JsonNode golden = golden();
        JsonNode entry = goldenCase(golden, "mixtral-style-no-head-dim-f16");
        Path out = export(golden, "mixtral-style", tekkenFiles(), entry.path("outtype").asText(), dir);

        GgufReader reader = GgufReader.open(out);
        assertFalse(reader.metadata().containsKey("llama.attention.key_length"));
        assertEquals(8L, reader.metadata().get("llama.rope.dimension_count").value());
        ExportGgufTest.assertConverterFile(entry, out);
    }

    @Test
    void aPreTokenizerTheConverterDoesNotKnowIsRefused(@TempDir Path dir) throws Exception {
        JsonNode golden = golden();
        JsonNode entry = goldenCase(golden, "tekken-style-unknown-pre-tokenizer");
        assertTrue(entry.path("refused").asBoolean());
        Path model = dir.resolve("nemo-style");
        checkpoint(golden, "unknown-style", model, Map.of("tokenizer.json", TEKKEN_STYLE, "tokenizer_config.json",
                TEKKEN.resolve("tokenizer_config.json")));
        Path out = dir.resolve("out").resolve("model.gguf");
        Map<String, byte[]> before = MixtuneCliTest.snapshot(dir);

        MixtuneCliTest.Result refused = MixtuneCliTest.run("export-gguf", "--model", model.toString(), "--out",
                out.toString());
        assertEquals(2, refused.code(), refused.err());
        // the chkhsh the converter prints before it stops, so the user can look it up in llama.cpp
        assertTrue(refused.err().contains(entry.path("chkhsh").asText()), refused.err());
        assertTrue(refused.err().contains(model.resolve("tokenizer.json").toString()), refused.err());
        MixtuneCliTest.assertSameFiles(before, MixtuneCliTest.snapshot(dir));
        assertFalse(Files.exists(out.getParent()), "nothing written, not even --out's folder");
    }
}
