package io.mixtune.trainer.run;

import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeValueException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.function.Consumer;

/**
 * A recipe's data as training reads it: tokenized once into the data cache, which `mixtune train` and `mixtune data
 * prepare` / `preview` share, so what the preview shows is what trains.
 */
public final class TrainingData {
    public static final String BASE_MODEL_DIR = "base-model";
    /** Where a distillation teacher's preset is written, under output_dir. */
    public static final String TEACHER_MODEL_DIR = "teacher-model";

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

    /** The tokenizer of the recipe's model ({@link #tokenizer(Path, ModelConfig, boolean)}). */
    public static TokenizerFile tokenizer(Recipe recipe) {
        Path dir = baseModelDir(recipe);
        ModelConfig config = Files.isRegularFile(dir.resolve("config.json")) ? ModelConfig.read(dir.resolve("config.json"))
                : ModelPreset.load(recipe.model().preset());
        return tokenizer(dir, config, recipe.model().preset() != null);
    }

    /**
     * The one rule every command that tokenizes for a model follows (train, DPO, eval, generate, data prepare and
     * preview): the model folder's own tokenizer.json; the bundled Mistral v1 one only for a preset, which is built
     * with it (its folder gets a copy, which may not be written yet, and is not read back). Never a silent stand-in for a user's model: a
     * Mistral v1 tokenizer fits a 32768-token vocabulary by size and still gives the wrong ids, and at another size
     * it fails deep in libtorch ("index out of range in self"). Whichever it is, its ids must fit the model's
     * vocab_size. BOS and EOS come from config.json (the preset's when there is none yet). A model whose tokenizer has
     * no BOS (see {@link ModelConfig#bosTokenId}) tokenizes with {@link TextTokenizer#NO_BOS}, as transformers does;
     * one whose tokenizer_config.json names a bos_token tokenizer.json lacks is refused here, naming both files.
     *
     * @throws IllegalArgumentException saying what to provide
     */
    public static TokenizerFile tokenizer(Path dir, ModelConfig config, boolean preset) {
        Path file = dir.resolve("tokenizer.json");
        if (config.bosTokenId() == null && ModelConfig.bosTokenUnknownToTokenizer(dir.resolve("config.json"))) {
            // transformers adds the token at a new id past the vocabulary, whose embedding row the model lacks
            throw new IllegalArgumentException(ModelConfig.noBosToken(dir.resolve("config.json")) + ": transformers "
                    + "would add it as a new token past the vocabulary, which needs a resized embedding; name a token "
                    + "of " + file + " as bos_token, set it to null, or set bos_token_id in "
                    + dir.resolve("config.json"));
        }
        long bosId = config.bosTokenId() == null ? TextTokenizer.NO_BOS : config.bosTokenId();
        TokenizerFile tokenizer;
        if (preset) {
            // Also once dir holds the copy written for transformers (its special tokens declared): the data cache's key
            // hashes the tokenizer.json, and a resumed run keyed on the copy tokenized the same samples again.
            tokenizer = TokenizerFile.resource(ModelPreset.MISTRAL_V1_TOKENIZER, bosId, config.eosTokenId());
        } else if (Files.isRegularFile(file)) {
            tokenizer = TokenizerFile.of(file, bosId, config.eosTokenId());
        } else {
            throw new IllegalArgumentException(dir + ": no tokenizer.json: mixtune tokenizes with the model's own "
                    + "tokenizer; copy the model's tokenizer.json into " + dir + " (the bundled Mistral v1 tokenizer "
                    + "serves only the presets, which are built with it)");
        }
        long idLimit = TextTokenizer.idLimit(tokenizer.json(), tokenizer.name());
        if (idLimit > config.vocabSize()) {
            throw new IllegalArgumentException(tokenizer.name() + ": gives token ids up to " + (idLimit - 1)
                    + ", but the model in " + dir + " has vocab_size " + config.vocabSize() + ": it is not this "
                    + "model's tokenizer; put the model's own tokenizer.json in " + dir);
        }
        return tokenizer;
    }

    /**
     * What training asks of its samples before step 1, and `mixtune validate` with it: at least one that trains.
     *
     * @return {@code dataset}
     */
    public static ChatDataset requireTrainingSamples(Recipe recipe, ChatDataset dataset) {
        if (dataset.train().isEmpty()) {
            throw new RecipeValueException("data.files", "no usable training sample in " + String.join(", ",
                    recipe.data().files()) + " (" + dataset.report() + ")");
        }
        return dataset;
    }

    /**
     * A run's samples, from output_dir/data-cache or tokenized into it, the cache's note told to {@code notes}: at
     * least one that trains, else the run stops here, before the model loads.
     */
    public static ChatDataset loadTrainingSamples(Recipe recipe, Consumer<String> notes) {
        SampleCache.Loaded data = load(recipe, cacheDir(recipe));
        if (data.note() != null) {
            notes.accept(data.note());
        }
        return requireTrainingSamples(recipe, data.dataset());
    }

    /** The samples, from the cache in {@code cacheDir} when it holds them for this recipe, else tokenized into it. */
    public static SampleCache.Loaded load(Recipe recipe, Path cacheDir) {
        SampleCache.TokenizerFile tokenizer = tokenizer(recipe);
        try {
            recipe.data().chatTemplate(tokenizer); // template: hf on a model without one is the recipe's to fix
        } catch (IllegalArgumentException e) {
            throw new RecipeValueException("data.template", e.getMessage().replaceFirst("^template: ", ""));
        }
        return new SampleCache(cacheDir).load(recipe.data(), tokenizer, recipe.train().seed());
    }
}
