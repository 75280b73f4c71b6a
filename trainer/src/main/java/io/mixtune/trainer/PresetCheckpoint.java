package io.mixtune.trainer;

import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.data.template.MistralTemplate;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.safetensors.DType;
import io.mixtune.trainer.chat.SavedTokenizer;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.Locale;
import java.util.OptionalInt;

/**
 * A preset of configs/models/ written as a Hugging Face checkpoint with random weights and the bundled Mistral v1
 * tokenizer, so transformers and PEFT load it as they would a Hub model. Only small presets: the big ones hold real
 * shapes for memory plans.
 */
public final class PresetCheckpoint {
    /** Above this the preset is a shape for memory plans, not something to write to disk with random weights. */
    public static final long MAX_MATERIALISED_PARAMETERS = 2_000_000_000L;

    private static final List<String> TOKENIZER_FILES = List.of("tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "tokenizer.model");

    private PresetCheckpoint() {}

    /** @return the preset's config */
    public static ModelConfig write(String presetName, Path outDir, long seed, DType dtype) {
        return write(presetName, OptionalInt.empty(), outDir, seed, dtype);
    }

    /**
     * @param layers the preset cut to this many decoder layers (any preset, even a shape-only one: the caller asked
     *     for its size), or empty for the preset as it is
     * @return the config written
     */
    public static ModelConfig write(String presetName, OptionalInt layers, Path outDir, long seed, DType dtype) {
        ModelConfig preset = ModelPreset.load(presetName);
        ModelConfig config = layers.isPresent() ? preset.withHiddenLayers(layers.getAsInt()) : preset;
        long parameters = config.parameterCount();
        if (layers.isEmpty() && parameters > MAX_MATERIALISED_PARAMETERS) {
            throw new IllegalArgumentException(String.format(Locale.ROOT,
                    "preset %s has %.1fB parameters: it holds the real shapes for memory plans and is never written "
                            + "with random weights; use tiny-mistral or tiny-mixtral, or --layers N for its real "
                            + "per-layer shapes with fewer layers", presetName, parameters / 1e9));
        }
        RandomCheckpoint.write(config, outDir, seed, dtype, RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES);
        if (config.vocabSize() == ModelPreset.MISTRAL_V1_VOCAB_SIZE) {
            copyMistralTokenizer(outDir);
        }
        return config;
    }

    private static void copyMistralTokenizer(Path outDir) {
        String folder = ModelPreset.MISTRAL_V1_TOKENIZER.substring(0, ModelPreset.MISTRAL_V1_TOKENIZER.lastIndexOf('/') + 1);
        for (String file : TOKENIZER_FILES) {
            try (InputStream in = PresetCheckpoint.class.getClassLoader().getResourceAsStream(folder + file)) {
                if (in != null) {
                    Files.copy(in, outDir.resolve(file), StandardCopyOption.REPLACE_EXISTING);
                }
            } catch (IOException e) {
                throw new UncheckedIOException("cannot write " + outDir.resolve(file) + ": " + e.getMessage(), e);
            }
        }
        // With the chat template data.template: auto trains a preset with, so apply_chat_template works on it.
        SavedTokenizer.write(outDir, TokenizerFile.resource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2),
                new MistralTemplate(1, 2));
    }
}
