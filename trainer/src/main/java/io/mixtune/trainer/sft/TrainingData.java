package io.mixtune.trainer.sft;

import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.trainer.recipe.Recipe;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * A recipe's data as training reads it: tokenized once into the data cache, which `mixtune train` and `mixtune data
 * prepare` / `preview` share, so what the preview shows is what trains.
 */
public final class TrainingData {
    public static final String BASE_MODEL_DIR = "base-model";

    private TrainingData() {}

    /** {@code output_dir/data-cache}. */
    public static Path cacheDir(Recipe recipe) {
        return Path.of(recipe.outputDir(), "data-cache");
    }

    /**
     * The model's checkpoint directory: model.path, or for a preset the random checkpoint training writes into
     * {@code output_dir/base-model} (which may not exist yet); one written for another preset is refused
     * ({@link CachedPreset#require}).
     */
    public static Path baseModelDir(Recipe recipe) {
        if (recipe.model().path() != null) {
            return Path.of(recipe.model().path());
        }
        Path dir = Path.of(recipe.outputDir(), BASE_MODEL_DIR);
        CachedPreset.require(recipe.model().preset(), dir);
        return dir;
    }

    /**
     * The model's tokenizer.json, else the bundled Mistral v1 one (what a preset's checkpoint gets), with BOS and EOS
     * from its config.json, else from the preset.
     */
    public static TokenizerFile tokenizer(Recipe recipe) {
        Path dir = baseModelDir(recipe);
        ModelConfig config = Files.isRegularFile(dir.resolve("config.json")) ? ModelConfig.read(dir.resolve("config.json"))
                : ModelPreset.load(recipe.model().preset());
        return tokenizer(dir, config);
    }

    /** The tokenizer.json in {@code dir}, else the bundled Mistral v1 one, with BOS and EOS from {@code config}. */
    public static TokenizerFile tokenizer(Path dir, ModelConfig config) {
        return Files.isRegularFile(dir.resolve("tokenizer.json"))
                ? TokenizerFile.of(dir.resolve("tokenizer.json"), config.bosTokenId(), config.eosTokenId())
                : TokenizerFile.resource(ModelPreset.MISTRAL_V1_TOKENIZER, config.bosTokenId(), config.eosTokenId());
    }

    /** The samples, from the cache in {@code cacheDir} when it holds them for this recipe, else tokenized into it. */
    public static SampleCache.Loaded load(Recipe recipe, Path cacheDir) {
        return new SampleCache(cacheDir).load(recipe.data(), tokenizer(recipe), recipe.train().seed());
    }
}
