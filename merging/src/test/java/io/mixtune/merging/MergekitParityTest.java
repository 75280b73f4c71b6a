package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What mergekit (arcee-ai/mergekit) does with a config, mixtune does too: the files it carries (merge.py,
 * _copy_tokenizer), tokenizers it does not compare, inputs of mixed dtypes cast on load (io/tasks.py), flags written as
 * numbers, linear's base_model among its models. Each input is a tiny checkpoint of one value per model.
 */
class MergekitParityTest {
    /** A BPE tokenizer.json: {@code <s>} added, a, b, ab, and the merge "a b". */
    private static final String TOKENIZER = """
            {"version": "1.0", "truncation": null, "added_tokens": [{"id": 0, "content": "<s>", "special": true}],
             "model": {"type": "BPE", "vocab": {"<s>": 0, "a": 1, "b": 2, "ab": 3}, "merges": ["a b"]}}
            """;

    @TempDir
    Path dir;

    /** A two-layer checkpoint whose every weight is {@code value}, named in its config, with {@link #TOKENIZER}. */
    private Path model(String name, DType dtype, float value) throws IOException {
        Path model = Files.createDirectories(dir.resolve(name));
        Files.writeString(model.resolve("config.json"), """
                {"_name_or_path": "%s", "model_type": "mistral", "architectures": ["MistralForCausalLM"],
                 "hidden_size": 2, "num_hidden_layers": 2, "vocab_size": 4}
                """.formatted(name));
        Files.writeString(model.resolve("tokenizer.json"), TOKENIZER);
        Files.writeString(model.resolve("tokenizer_config.json"), "{\"chat_template\": \"" + name + "\"}");
        List<String> names = List.of("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                "model.layers.1.self_attn.q_proj.weight", "model.norm.weight", "lm_head.weight");
        List<TensorSpec> specs = names.stream().map(n -> new TensorSpec(n, dtype, new long[] {2})).toList();
        SafetensorsWriter.writeCheckpoint(model, specs, Long.MAX_VALUE, new SafetensorsWriter.TensorSource() {
            @Override
            public float[] floats(TensorSpec spec) {
                return new float[] {value, value};
            }

            @Override
            public byte[] rawBytes(TensorSpec spec) {
                throw new UnsupportedOperationException();
            }
        });
        return model;
    }

    private Path merge(String yaml, String out) throws IOException {
        Path file = Files.writeString(dir.resolve(out + ".yml"), yaml);
        ModelMerge.run(MergeYaml.read(file, dir.resolve(out)), false, Long.MAX_VALUE);
        return dir.resolve(out);
    }

    private String refusal(String yaml, String out) throws IOException {
        return assertThrows(IllegalArgumentException.class, () -> merge(yaml, out)).getMessage();
    }

    private static void assertWeights(Path merged, DType dtype, float value) {
        try (SafetensorsReader reader = SafetensorsReader.open(merged)) {
            for (String name : reader.names()) {
                assertEquals(dtype, reader.info(name).dtype(), name);
                for (float v : reader.readFloats(name)) {
                    assertEquals(value, v, 1e-6, name);
                }
            }
        }
    }

    private static String linear(Path... models) {
        StringBuilder yaml = new StringBuilder("merge_method: linear\nmodels:\n");
        for (Path model : models) {
            yaml.append("  - model: ").append(model).append("\n    parameters: {weight: 1.0}\n");
        }
        return yaml.toString();
    }

    /**
     * mergekit copies chat_template.jinja (the only place transformers 5 saves a template), chat_template.json,
     * added_tokens.json and merges.txt with the tokenizer, all from the donor: another input's template file does not
     * come along to override the donor's tokenizer_config.json.
     */
    @Test
    void theChatTemplateFilesComeWithTheDonorsTokenizer() throws IOException {
        Path a = model("a", DType.F32, 1);
        Path b = model("b", DType.F32, 3);
        List<String> extra = List.of("chat_template.jinja", "chat_template.json", "added_tokens.json", "merges.txt");
        for (String file : extra) {
            Files.writeString(a.resolve(file), "a's " + file);
        }
        Path fromA = merge(linear(a, b), "from-a");
        for (String file : extra) {
            assertEquals("a's " + file, Files.readString(fromA.resolve(file)), file);
        }
        Files.writeString(a.resolve("generation_config.json"), "a's generation config");
        Files.writeString(b.resolve("generation_config.json"), "b's generation config");
        Path fromB = merge(linear(a, b) + "tokenizer_source: " + b + "\n", "from-b");
        assertEquals("{\"chat_template\": \"b\"}", Files.readString(fromB.resolve("tokenizer_config.json")));
        // mergekit writes no generation_config.json here; mixtune keeps the first model's (README, Merging)
        assertEquals("a's generation config", Files.readString(fromB.resolve("generation_config.json")));
        assertFalse(Files.exists(fromB.resolve("chat_template.jinja")), "a's .jinja would override b's template");
        assertEquals("a's merges.txt", Files.readString(fromB.resolve("merges.txt")), "b has none: the next input's");
    }

    /** mergekit copies the donor's tokenizer without comparing; a tokenizer.json that differs in settings merges. */
    @Test
    void tokenizersThatDifferOnlyInSettingsMerge() throws IOException {
        Path a = model("a", DType.F32, 1);
        Path b = model("b", DType.F32, 3);
        Files.writeString(b.resolve("tokenizer.json"), TOKENIZER.replace("\"truncation\": null",
                "\"truncation\": {\"max_length\": 512}").replace("\"special\": true", "\"special\": true,"
                + " \"normalized\": false"));
        assertWeights(merge(linear(a, b), "merged"), DType.F32, 2);
        assertEquals(TOKENIZER, Files.readString(dir.resolve("merged/tokenizer.json")), "the first model's");
    }

    /**
     * Another token at an id is refused with or without tokenizer_source: mixtune cannot rebuild embedding rows for
     * the donor's vocabulary. Other merges (the same ids, text split differently) are the donor's to decide.
     */
    @Test
    void aDifferentVocabularyIsRefusedEvenWithTokenizerSource() throws IOException {
        Path a = model("a", DType.F32, 1);
        Path b = model("b", DType.F32, 3);
        Files.writeString(b.resolve("tokenizer.json"), TOKENIZER.replace("\"ab\": 3", "\"ba\": 3"));
        String plain = refusal(linear(a, b), "plain");
        assertTrue(plain.contains(b.resolve("tokenizer.json") + ": id 3 is 'ba' but 'ab'")
                && plain.contains("different tokenizers"), plain);
        String donor = refusal(linear(a, b) + "tokenizer_source: " + a + "\n", "donor");
        assertTrue(donor.contains("id 3 is 'ba' but 'ab'") && donor.contains("cannot rebuild"), donor);

        Path c = model("c", DType.F32, 3);
        Files.writeString(c.resolve("tokenizer.json"), TOKENIZER.replace("[\"a b\"]", "[]"));
        String merges = refusal(linear(a, c), "merges");
        assertTrue(merges.contains("its merges differ") && merges.contains("tokenizer_source"), merges);
        assertWeights(merge(linear(a, c) + "tokenizer_source: " + c + "\n", "from-c"), DType.F32, 2);
        assertEquals(Files.readString(c.resolve("tokenizer.json")), Files.readString(dir.resolve("from-c/tokenizer.json")));
    }

    /**
     * A SentencePiece tokenizer.model (sentencepiece_model.proto's ModelProto): each piece with its score and type
     * (1 normal, 3 control), and a trainer spec of the given bytes, which the comparison ignores.
     */
    private static byte[] sentencePiece(String trainerSpec, Object... pieceScoreType) {
        java.io.ByteArrayOutputStream model = new java.io.ByteArrayOutputStream();
        for (int i = 0; i < pieceScoreType.length; i += 3) {
            java.io.ByteArrayOutputStream piece = new java.io.ByteArrayOutputStream();
            byte[] text = ((String) pieceScoreType[i]).getBytes(java.nio.charset.StandardCharsets.UTF_8);
            piece.write(1 << 3 | 2);
            piece.write(text.length);
            piece.writeBytes(text);
            piece.write(2 << 3 | 5);
            piece.writeBytes(java.nio.ByteBuffer.allocate(4).order(java.nio.ByteOrder.LITTLE_ENDIAN)
                    .putFloat(((Number) pieceScoreType[i + 1]).floatValue()).array());
            piece.write(3 << 3);
            piece.write((Integer) pieceScoreType[i + 2]);
            model.write(1 << 3 | 2);
            model.write(piece.size());
            model.writeBytes(piece.toByteArray());
        }
        byte[] spec = trainerSpec.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        model.write(2 << 3 | 2);
        model.write(spec.length);
        model.writeBytes(spec);
        return model.toByteArray();
    }

    /** {@link #TOKENIZER}'s vocabulary as a tokenizer.model whose id 3 is {@code third}. */
    private static byte[] sentencePiece(String trainerSpec, String third, float thirdScore) {
        return sentencePiece(trainerSpec, "<s>", 0, 3, "a", -1, 1, "b", -2, 1, third, thirdScore, 1);
    }

    /** The input's tokenizer is only a tokenizer.model (Mistral's and Llama's original form). */
    private static void sentencePieceOnly(Path model, byte[] tokenizerModel) throws IOException {
        Files.delete(model.resolve("tokenizer.json"));
        Files.write(model.resolve("tokenizer.model"), tokenizerModel);
    }

    /**
     * An input whose tokenizer is only a tokenizer.model is compared token by token with one whose tokenizer is a
     * tokenizer.json (before, the two were not compared at all): another token at an id is refused.
     */
    @Test
    void aTokenizerModelIsComparedTokenByTokenWithATokenizerJson() throws IOException {
        Path a = model("a", DType.F32, 1);
        Path b = model("b", DType.F32, 3);
        sentencePieceOnly(b, sentencePiece("spec", "ba", -3));
        String refused = refusal(linear(a, b), "mixed");
        assertTrue(refused.contains(b.resolve("tokenizer.model") + ": id 3 is 'ba' but 'ab'")
                && refused.contains("different tokenizers"), refused);
        String donor = refusal(linear(a, b) + "tokenizer_source: " + b + "\n", "mixed-donor");
        assertTrue(donor.contains(a.resolve("tokenizer.json") + ": id 3 is 'ab' but 'ba'")
                && donor.contains("cannot rebuild"), donor);

        Path c = model("c", DType.F32, 3);
        sentencePieceOnly(c, sentencePiece("spec", "ab", -3));
        assertWeights(merge(linear(a, c), "same-tokens"), DType.F32, 2);
        assertWeights(merge(linear(c, a), "same-tokens-reversed"), DType.F32, 2);
    }

    /**
     * Two tokenizer.model files are compared by their pieces, scores and types, as two tokenizer.json files by their
     * tokens and merges (before, byte for byte: a trainer spec that differed refused the merge); scores that differ
     * split text differently and are refused unless tokenizer_source names the one carried.
     */
    @Test
    void tokenizerModelsAreComparedByTheirPiecesNotTheirBytes() throws IOException {
        Path a = model("a", DType.F32, 1);
        Path b = model("b", DType.F32, 3);
        sentencePieceOnly(a, sentencePiece("trained on a", "ab", -3));
        sentencePieceOnly(b, sentencePiece("trained on b", "ab", -3));
        assertWeights(merge(linear(a, b), "same-pieces"), DType.F32, 2);
        assertArrayEquals(sentencePiece("trained on a", "ab", -3),
                Files.readAllBytes(dir.resolve("same-pieces/tokenizer.model")), "the first model's tokenizer.model");

        Path c = model("c", DType.F32, 3);
        sentencePieceOnly(c, sentencePiece("trained on a", "ab", -7));
        String scores = refusal(linear(a, c), "scores");
        assertTrue(scores.contains(c.resolve("tokenizer.model") + ": its pieces' scores or types differ")
                && scores.contains("tokenizer_source"), scores);
        assertWeights(merge(linear(a, c) + "tokenizer_source: " + c + "\n", "scores-from-c"), DType.F32, 2);

        Path d = model("d", DType.F32, 3);
        sentencePieceOnly(d, sentencePiece("trained on a", "ba", -3));
        String tokens = refusal(linear(a, d), "tokens");
        assertTrue(tokens.contains(d.resolve("tokenizer.model") + ": id 3 is 'ba' but 'ab'"), tokens);

        Path e = model("e", DType.F32, 3);
        sentencePieceOnly(e, "not a model".getBytes(java.nio.charset.StandardCharsets.UTF_8));
        String damaged = refusal(linear(a, e), "damaged");
        assertTrue(damaged.contains(e.resolve("tokenizer.model") + ": not a SentencePiece model"), damaged);
    }

    /** Mistral's own tokenizer.model and the tokenizer.json transformers converts it to hold the same 32000 tokens. */
    @Test
    void mistralsTokenizerModelAndItsTokenizerJsonAreOneVocabulary() throws IOException {
        Path mistral = Path.of("../configs/tokenizer/mistral-v1");
        Path a = model("a", DType.F32, 1);
        Path b = model("b", DType.F32, 3);
        Files.copy(mistral.resolve("tokenizer.json"), a.resolve("tokenizer.json"),
                java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        sentencePieceOnly(b, Files.readAllBytes(mistral.resolve("tokenizer.model")));
        assertWeights(merge(linear(a, b), "mistral"), DType.F32, 2);
        Files.write(b.resolve("tokenizer.model"), sentencePiece("spec", "<unk>", 0, 2));
        String refused = refusal(linear(a, b), "mistral-other");
        assertTrue(refused.contains("id 1 is absent but '<s>' (vocabularies of 1 and 32000 tokens)"), refused);
    }

    /**
     * Inputs of different dtypes merge in float32 (mergekit casts each tensor to dtype on load); the output is dtype
     * if given, else the dtype of the model whose config the merge carries (the base, else the first model).
     */
    @Test
    void inputsOfDifferentDtypesMerge() throws IOException {
        Path half = model("half", DType.F16, 1);
        Path full = model("full", DType.F32, 3);
        Path base = model("base", DType.BF16, 0);
        assertWeights(merge(linear(half, full), "first-dtype"), DType.F16, 2);
        assertWeights(merge(linear(half, full) + "dtype: float32\n", "given"), DType.F32, 2);
        assertWeights(merge(linear(full, half) + "base_model: " + half + "\n", "base-dtype"), DType.F16, 2);
        assertWeights(merge("merge_method: task_arithmetic\nbase_model: " + base + "\nmodels:\n  - model: " + full
                + "\n    parameters: {weight: 0.5}\n", "task-vectors"), DType.BF16, 1.5f);
    }

    /** mergekit's parameter values are numbers or lists: a dumped config (mergekit-evolve's) writes flags as 1.0. */
    @Test
    void flagsWrittenAsNumbersAreRead() throws IOException {
        Path file = Files.writeString(dir.resolve("flags.yml"), """
                merge_method: dare_ties
                base_model: base
                models:
                  - model: a
                    parameters: {weight: 0.5, density: 0.5}
                parameters:
                  int8_mask: 1.0
                  normalize: 1
                  rescale: 0.0
                """);
        MergeConfig config = MergeYaml.read(file, dir.resolve("out"));
        assertEquals(Boolean.TRUE, config.parameters().int8Mask());
        assertEquals(Boolean.TRUE, config.parameters().normalize());
        assertEquals(Boolean.FALSE, config.parameters().rescale());
        Path half = Files.writeString(dir.resolve("half.yml"), Files.readString(file).replace("normalize: 1",
                "normalize: 0.5"));
        String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(half, dir.resolve("out")))
                .getMessage();
        assertTrue(message.contains(":8:") && message.contains("expected true or false"), message);
    }

    /** ties takes rescale as mergekit does (off by default); dare_* rescale by default; task_arithmetic thins nothing. */
    @Test
    void tiesTakesRescale() throws IOException {
        String ties = "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.5}\n";
        assertFalse(MergeYaml.read(Files.writeString(dir.resolve("t.yml"), ties), dir.resolve("o")).rescale());
        assertTrue(MergeYaml.read(Files.writeString(dir.resolve("tr.yml"), ties + "parameters: {rescale: true}\n"),
                dir.resolve("o")).rescale());
        assertTrue(MergeYaml.read(Files.writeString(dir.resolve("d.yml"), ties.replace("ties", "dare_ties")),
                dir.resolve("o")).rescale());
        Path arithmetic = Files.writeString(dir.resolve("ta.yml"), "merge_method: task_arithmetic\nbase_model: base\n"
                + "models:\n  - model: a\nparameters: {rescale: true}\n");
        String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(arithmetic, dir.resolve("o")))
                .getMessage();
        assertTrue(message.contains("task_arithmetic takes no rescale (only the sparsifying task-vector methods do)"), message);
    }

    /**
     * linear takes a base_model listed among its models as mergekit does: averaged as one of them, and the model whose
     * config the merge carries. One that is not among them is still refused.
     */
    @Test
    void linearAveragesItsBaseModelAsOneOfItsModels() throws IOException {
        Path a = model("a", DType.F32, 1);
        Path b = model("b", DType.F32, 3);
        Path merged = merge(linear(b, a) + "base_model: " + a + "\n", "merged");
        assertWeights(merged, DType.F32, 2);
        assertEquals(Files.readString(a.resolve("config.json")), Files.readString(merged.resolve("config.json")));
        assertEquals("{\"chat_template\": \"a\"}", Files.readString(merged.resolve("tokenizer_config.json")));
        Path c = model("c", DType.F32, 5);
        String apart = refusal(linear(a, b) + "base_model: " + c + "\n", "apart");
        assertTrue(apart.contains("linear takes no base_model") && apart.contains("one of its models"), apart);
    }

    /** A problem found when a record checks itself is reported at its key, not past the end where out was appended. */
    @Test
    void problemsFoundByTheRecordsPointAtTheirKey() throws IOException {
        Path file = Files.writeString(dir.resolve("bad.yml"), """
                merge_method: linear
                base_model: elsewhere
                models:
                  - model: a
                  - model: b
                """);
        String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(file, dir.resolve("out")))
                .getMessage();
        assertTrue(message.startsWith(file + ":2:1: "), message);
        Path decay = Files.writeString(dir.resolve("decay.yml"), """
                merge_method: ema
                models:
                  - model: a
                  - model: b
                parameters:
                  decay: 1.5
                """);
        message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(decay, dir.resolve("out")))
                .getMessage();
        assertTrue(message.startsWith(decay + ":6:3: "), message);
    }
}
