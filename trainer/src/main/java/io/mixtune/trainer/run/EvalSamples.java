package io.mixtune.trainer.run;

import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.data.template.HfChatTemplate;
import io.mixtune.data.template.JinjaChatTemplate;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.model.generate.GenerationConfig;
import io.mixtune.model.generate.Generator;
import io.mixtune.model.generate.TokenSampler;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.chat.SavedTokenizer;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeValueException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.OptionalDouble;
import java.util.OptionalInt;

/**
 * train.eval_prompts answered by the model as it trains, so that a run shows what the model learned and not only a
 * loss. Each prompt is a user's message rendered with the generation prompt of the chat template trained with, read
 * from the tokenizer_config.json the adapter gets ({@link SavedTokenizer}), so the prompt ids are the ones
 * {@code mixtune generate --chat} builds on that adapter; the answer is decoded as that command decodes it without a
 * decoding flag, up to train.eval_max_new_tokens: as the base's generation_config.json says (its do_sample, sampling
 * values and repetition penalty; greedy without the file), sampled from seed 0, as TRL's LogCompletionsCallback calls
 * {@code generate()} with the model's generation config. The adapter runs without dropout, its KV cache freed after
 * each prompt.
 */
public final class EvalSamples {
    /** The seed {@code mixtune generate} samples from without --seed. */
    private static final long SEED = 0;

    private final List<String> prompts;
    private final List<long[]> promptIds;
    private final int maxNewTokens;
    private final TokenizerFile tokenizer;
    private final List<Integer> eosTokenIds;
    private final TokenSampler.Settings decoding;

    private EvalSamples(List<String> prompts, List<long[]> promptIds, int maxNewTokens, TokenizerFile tokenizer,
            List<Integer> eosTokenIds, TokenSampler.Settings decoding) {
        this.prompts = prompts;
        this.promptIds = promptIds;
        this.maxNewTokens = maxNewTokens;
        this.tokenizer = tokenizer;
        this.eosTokenIds = eosTokenIds;
        this.decoding = decoding;
    }

    /**
     * The recipe's prompts, tokenized; null when it has none.
     *
     * @throws RecipeValueException naming train.eval_prompts when a prompt and its answer pass the model's positions,
     *     or when the base's generation_config.json samples with a value sampling cannot use
     */
    public static EvalSamples of(Recipe recipe, TrainingModel model) {
        Recipe.Train train = recipe.train();
        if (train.evalPrompts().isEmpty()) {
            return null;
        }
        TokenizerFile tokenizer = TrainingData.tokenizer(recipe);
        HfChatTemplate template = chatTemplate(recipe, tokenizer);
        int positions = model.model().config().maxPositionEmbeddings();
        List<long[]> promptIds = new ArrayList<>();
        try (TextTokenizer text = tokenizer.open()) {
            for (String prompt : train.evalPrompts()) {
                long[] ids = template.promptIds(List.of(new Message(Role.USER, prompt)), text);
                if (ids.length + (long) train.evalMaxNewTokens() > positions) {
                    throw new RecipeValueException("train.eval_prompts", "prompt " + (promptIds.size() + 1) + " is "
                            + ids.length + " tokens, which with train.eval_max_new_tokens " + train.evalMaxNewTokens()
                            + " exceeds the model's max_position_embeddings " + positions);
                }
                promptIds.add(ids);
            }
        }
        // An answer ends where generate's would (at any EOS id of the base's generation_config.json), decoded as the
        // file says.
        GenerationConfig generationConfig = GenerationConfig.read(model.baseModelDir(), model.model().config());
        TokenSampler.Settings decoding;
        try {
            decoding = generationConfig.resolve(Optional.empty(), OptionalDouble.empty(), OptionalInt.empty(),
                    OptionalDouble.empty(), OptionalDouble.empty(), OptionalDouble.empty());
        } catch (IllegalArgumentException e) {
            throw new RecipeValueException("train.eval_prompts", "answers are decoded as the base's "
                    + GenerationConfig.FILE_NAME + " says, and " + e.getMessage());
        }
        return new EvalSamples(train.evalPrompts(), promptIds, train.evalMaxNewTokens(), tokenizer,
                generationConfig.eosTokenIds(), decoding);
    }

    /** The chat template as the adapter's tokenizer_config.json holds it, read back as generate --chat reads it. */
    public static HfChatTemplate chatTemplate(Recipe recipe, TokenizerFile tokenizer) {
        JinjaChatTemplate jinja;
        try {
            jinja = JinjaChatTemplate.fromTokenizerConfig("tokenizer_config.json",
                    SavedTokenizer.config(tokenizer, recipe.data().chatTemplate(tokenizer).jinja()));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        if (jinja == null) {
            throw new IllegalStateException("data.template " + recipe.data().template() + " has no Jinja form to "
                    + "prompt train.eval_prompts with");
        }
        return new HfChatTemplate(jinja, tokenizer.bosId(), tokenizer.eosId());
    }

    /** Each prompt answered by the model as it is now. */
    public List<TrainingListener.Sample> generate(TrainingModel model) {
        List<TrainingListener.Sample> samples = new ArrayList<>();
        Generator generator = new Generator(model.model(), eosTokenIds);
        try (LoraModel.Scope evaluating = model.lora().evaluating(); TextTokenizer text = tokenizer.open()) {
            for (int i = 0; i < prompts.size(); i++) {
                long[] answer = generator.generate(promptIds.get(i), maxNewTokens,
                        new TokenSampler(decoding, SEED), null)
                        .stream().mapToLong(Integer::longValue).toArray();
                samples.add(new TrainingListener.Sample(prompts.get(i), text.decode(answer)));
            }
        }
        return samples;
    }
}
