package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.model.safetensors.DType;
import io.mixtune.trainer.PresetCheckpoint;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * A model without tokenizer.model whose tokenizer.json is not BPE (a Unigram or WordPiece model) is refused by
 * export-gguf, exit 2, naming the model type: convert_hf_to_gguf.py's LlamaModel.set_vocab finds no tokenizer.model
 * (_set_vocab_sentencepiece), LlamaHfVocab refuses anything but BPE, and _set_vocab_gpt2 then stops on the unknown
 * pre-tokenizer hash (or, for a hash it knows, writes the pieces as a gpt2 BPE vocabulary without merges, which
 * llama.cpp cannot tokenize with).
 */
class ExportGgufVocabularyModelTest {

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "Unigram | {\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0.0],[\"<s>\",0.0],[\"</s>\",0.0],"
                + "[\"\u2581a\",-1.5]],\"byte_fallback\":false}",
        "WordPiece | {\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"continuing_subword_prefix\":\"##\","
                + "\"max_input_chars_per_word\":100,\"vocab\":{\"[UNK]\":0,\"<s>\":1,\"</s>\":2,\"a\":3}}"})
    void aTokenizerJsonThatIsNotBpeIsRefusedByItsModelType(String type, String model, @TempDir Path dir)
            throws Exception {
        Path checkpoint = dir.resolve("model");
        PresetCheckpoint.write("tiny-mistral", checkpoint, 0, DType.F32);
        Files.delete(checkpoint.resolve("tokenizer.model"));
        Files.writeString(checkpoint.resolve("tokenizer.json"), "{\"version\":\"1.0\",\"truncation\":null,"
                + "\"padding\":null,\"added_tokens\":[],\"normalizer\":null,\"pre_tokenizer\":null,"
                + "\"post_processor\":null,\"decoder\":null,\"model\":" + model + "}");
        Path out = dir.resolve("model.gguf");
        MixtuneCliTest.Result result = MixtuneCliTest.run("export-gguf", "--model", checkpoint.toString(), "--out",
                out.toString(), "--type", "f32");
        assertEquals(2, result.code(), result.err());
        assertTrue(result.err().contains("is a " + type + " tokenizer"), result.err());
        assertTrue(result.err().contains("tokenizer.model"), result.err());
        assertFalse(Files.exists(out));
    }
}
