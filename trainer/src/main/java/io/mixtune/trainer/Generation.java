package io.mixtune.trainer;

import ai.djl.Device;
import ai.djl.ndarray.NDManager;
import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.generate.GenerationConfig;
import io.mixtune.model.generate.Generator;
import io.mixtune.model.generate.TokenSampler;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.chat.ModelChat;
import io.mixtune.trainer.reward.RewardAdapterFit;
import io.mixtune.trainer.reward.RewardScorer;
import io.mixtune.trainer.reward.RewardSequences;
import io.mixtune.trainer.run.TrainingData;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.OptionalDouble;
import java.util.OptionalInt;
import java.util.Set;

/**
 * Generation from Java, what {@code mixtune generate} runs: a model (with a LoRA adapter, in 4 bits or not), a prompt,
 * greedy or sampled decoding with the rolling KV cache; with {@link BestOf}, N sampled answers scored by a reward model
 * and the best one picked (best-of-n, as in Stiennon et al. 2020 and Nakano et al. 2022). Prints nothing: the answers,
 * their scores and the prompt's logits come back in a {@link Result}.
 *
 * <pre>{@code
 * Generation.Result result = Generation.run(new Generation.Options(Path.of("base"), null, MistralCheckpoint.DENSE,
 *         Device.cpu(), new Generation.Prompt.Chat("Name a colour.", null), 32,
 *         Generation.Decoding.sampling(0.8, 1.0, 7), false, new Generation.BestOf(4, Path.of("rm/adapter"), "mistral")));
 * String best = result.best().text();
 * }</pre>
 */
public final class Generation {
    private Generation() {}

    /** What the model continues. */
    public sealed interface Prompt {
        /** Text, tokenized with the model's tokenizer.json with BOS; what it spells stays text. */
        record Text(String text) implements Prompt {}

        /**
         * A user's message in the chat template (the adapter's tokenizer_config.json, else the model's, else mistral)
         * with its generation prompt, after an optional system message (null for none).
         */
        record Chat(String message, String system) implements Prompt {}

        /** Token ids as they are, no tokenizer needed. */
        record Ids(long[] ids) implements Prompt {}
    }

    /**
     * How tokens are chosen: each empty value takes the model's generation_config.json's, else transformers' default
     * ({@link GenerationConfig}), as {@code model.generate()} fills what its caller leaves unset; answer i of best-of-n
     * samples from seed + i.
     *
     * @param doSample sample (true) or take the most likely token (false); empty: the model's do_sample
     */
    public record Decoding(Optional<Boolean> doSample, OptionalDouble temperature, OptionalInt topK,
            OptionalDouble topP, OptionalDouble minP, OptionalDouble repetitionPenalty, long seed) {
        /** Whatever the model's generation_config.json says (greedy without one), seed 0. */
        public static final Decoding MODEL_DEFAULTS = new Decoding(Optional.empty(), OptionalDouble.empty(),
                OptionalInt.empty(), OptionalDouble.empty(), OptionalDouble.empty(), OptionalDouble.empty(), 0);

        /** Always the most likely token (with the model's repetition penalty, if it sets one). */
        public static final Decoding GREEDY = MODEL_DEFAULTS.withDoSample(false);

        /** @throws IllegalArgumentException for a value {@link TokenSampler.Settings} refuses */
        public Decoding {
            Objects.requireNonNull(doSample, "doSample");
            TokenSampler.Settings defaults = TokenSampler.Settings.DEFAULTS;
            new TokenSampler.Settings(false, temperature.orElse(defaults.temperature()), topK.orElse(defaults.topK()),
                    topP.orElse(defaults.topP()), minP.orElse(defaults.minP()),
                    repetitionPenalty.orElse(defaults.repetitionPenalty())); // checks each value given
        }

        /** Sampled with this temperature and top-p from a seed; top-k and the rest as the model says. */
        public static Decoding sampling(double temperature, double topP, long seed) {
            return new Decoding(Optional.of(true), OptionalDouble.of(temperature), OptionalInt.empty(),
                    OptionalDouble.of(topP), OptionalDouble.empty(), OptionalDouble.empty(), seed);
        }

        public Decoding withDoSample(boolean sample) {
            return new Decoding(Optional.of(sample), temperature, topK, topP, minP, repetitionPenalty, seed);
        }

        /**
         * The settings on a model whose generation config is {@code model}.
         *
         * @throws InvalidOptions (decoding) when sampling would use a value of the model's file that cannot be
         *     sampled with
         */
        public TokenSampler.Settings settings(GenerationConfig model) {
            try {
                return model.resolve(doSample, temperature, topK, topP, minP, repetitionPenalty);
            } catch (IllegalArgumentException e) {
                throw new InvalidOptions("decoding", "{}: " + e.getMessage());
            }
        }

        /** The sampler of answer {@code answer} (0 for a single one) on a model whose generation config is {@code model}. */
        public TokenSampler sampler(GenerationConfig model, int answer) {
            return new TokenSampler(settings(model), seed + answer);
        }
    }

    /**
     * Best-of-n: {@code n} sampled answers, each scored with the reward model {@code rewardAdapter} (a reward adapter
     * on the same base) on the chat [system, user: prompt, assistant: answer] tokenized as {@code mixtune reward}
     * tokenizes a chat, with {@code rewardTemplate} (mistral or chatml, as the reward model was trained).
     */
    public record BestOf(int n, Path rewardAdapter, String rewardTemplate) {
        public BestOf {
            Objects.requireNonNull(rewardAdapter, "rewardAdapter");
            rewardTemplate = rewardTemplate == null ? RewardSequences.DEFAULT_TEMPLATE : rewardTemplate;
        }
    }

    /**
     * @param adapter a causal LM's LoRA adapter in PEFT format, or null
     * @param linears how the linear layers load (dense, or NF4 for QLoRA); the reward model loads the same way
     * @param keepPromptLogits whether the result carries the prompt's logits [prompt length][vocab]
     * @param bestOf best-of-n, or null for one answer
     */
    public record Options(Path model, Path adapter, MistralCheckpoint.LinearFactory linears, Device device,
            Prompt prompt, int maxNewTokens, Decoding decoding, boolean keepPromptLogits, BestOf bestOf) {}

    /**
     * One answer.
     *
     * @param text the new ids decoded (BOS and EOS left out), or null when the model has no tokenizer.json
     * @param reward its reward with best-of-n; empty otherwise, and for an empty answer (no chat to score)
     */
    public record Answer(List<Integer> ids, String text, OptionalDouble reward) {}

    /**
     * @param answers one, or best-of-n's N in sampling order (answer i from seed + i)
     * @param bestIndex the answer with the highest reward (the first of equal ones); empty without best-of-n
     * @param promptLogits the prompt's logits row by row, or null unless asked for
     */
    public record Result(long[] promptIds, List<Answer> answers, OptionalInt bestIndex, List<float[]> promptLogits) {
        /** The answer best-of-n chose, or the only one. */
        public Answer best() {
            return answers.get(bestIndex.orElse(0));
        }
    }

    /**
     * Options that cannot work, found before any weight loads: which {@link Options} component (its {@link #option}:
     * model, adapter, prompt, maxNewTokens, decoding or bestOf), and what was expected. The message names the
     * component; the CLI names its flag instead ({@link #describe}).
     */
    public static final class InvalidOptions extends InvalidOptionException {
        private final String problem;

        /** @param problem what is wrong; "{}" where the option's name goes, else the name goes first */
        InvalidOptions(String option, String problem) {
            super(option, describe(option, problem));
            this.problem = problem;
        }

        /** The message with the option called {@code name} (a command-line flag, say). */
        public String describe(String name) {
            return describe(name, problem);
        }

        private static String describe(String name, String problem) {
            return problem.contains("{}") ? problem.replace("{}", name) : name + " " + problem;
        }
    }

    /** Checks {@code options} from the files alone; {@link #run} runs this first. */
    public static void check(Options options) {
        Path modelDir = options.model();
        String modelProblem = InputDirectories.modelProblem(modelDir);
        if (modelProblem != null) {
            throw new InvalidOptions("model", modelDir + ": " + modelProblem);
        }
        if (options.maxNewTokens() < 0) {
            throw new InvalidOptions("maxNewTokens", "must be >= 0, got " + options.maxNewTokens());
        }
        if (options.adapter() != null) {
            String adapterProblem = InputDirectories.adapterProblem(options.adapter());
            if (adapterProblem != null) {
                throw new InvalidOptions("adapter", options.adapter() + ": " + adapterProblem);
            }
            try {
                // a reward model's adapter is refused, with what it is
                PeftAdapter.readConfig(options.adapter().resolve(PeftAdapter.CONFIG_FILE), Set.of());
            } catch (IllegalArgumentException e) {
                throw new InvalidOptions("adapter", e.getMessage());
            }
        }
        BestOf bestOf = options.bestOf();
        if (bestOf == null) {
            return;
        }
        if (bestOf.n() < 1) {
            throw new InvalidOptions("bestOf", "expects at least 1 answer, got " + bestOf.n());
        }
        if (!options.decoding().settings(generationConfig(modelDir)).doSample()) {
            throw new InvalidOptions("decoding", "is greedy, but best-of-n needs sampled answers (greedy, the "
                    + bestOf.n() + " answers would be one): sample with a temperature > 0");
        }
        if (options.prompt() instanceof Prompt.Ids) {
            throw new InvalidOptions("prompt", "is ids, but best-of-n scores the prompt and each answer as a chat: "
                    + "give the prompt as text");
        }
        if (!RewardSequences.TEMPLATES.contains(bestOf.rewardTemplate())) {
            throw new InvalidOptions("bestOf", "reward template: expected mistral or chatml, got '"
                    + bestOf.rewardTemplate() + "'");
        }
        try {
            RewardAdapterFit.require(bestOf.rewardAdapter(), modelDir);
        } catch (IllegalArgumentException e) {
            throw new InvalidOptions("rewardAdapter", e.getMessage());
        }
    }

    /**
     * Generates the answer, or best-of-n's N answers; the policy model is closed before the reward model loads, so
     * the two never take memory at once.
     */
    public static Result run(Options options) {
        check(options);
        BestOf bestOf = options.bestOf();
        int n = bestOf == null ? 1 : bestOf.n();
        ModelConfig config = readConfig(options.model());
        GenerationConfig generationConfig = generationConfig(options.model());
        long[] promptIds = promptIds(options.prompt(), options.model(), options.adapter(), config);
        int positions = config.maxPositionEmbeddings();
        if (promptIds.length + (long) options.maxNewTokens() > positions) {
            throw new InvalidOptions("maxNewTokens", "a prompt of " + promptIds.length + " tokens and {} "
                    + options.maxNewTokens() + " exceed max_position_embeddings " + positions + " of "
                    + options.model().resolve("config.json") + ": the model has no position beyond it; ask for at "
                    + "most " + Math.max(0, positions - promptIds.length) + " new tokens");
        }
        options.decoding().settings(generationConfig); // a file's value that sampling cannot use fails here
        List<float[]> promptLogits = options.keepPromptLogits() ? new ArrayList<>() : null;
        List<List<Integer>> generated = new ArrayList<>();
        try (NDManager manager = NDManager.newBaseManager(options.device());
                CausalLm model = MistralCheckpoint.load(options.model(), manager, options.linears())) {
            if (options.adapter() != null) {
                PeftAdapter.load(new LoraModel(model), options.adapter(), "default");
            }
            Generator generator = new Generator(model, generationConfig.eosTokenIds());
            for (int i = 0; i < n; i++) {
                generated.add(generator.generate(promptIds, options.maxNewTokens(),
                        options.decoding().sampler(generationConfig, i), i == 0 ? promptLogits : null));
            }
        }
        List<String> texts = new ArrayList<>();
        boolean hasTokenizer = Files.isRegularFile(options.model().resolve("tokenizer.json"));
        try (TextTokenizer tokenizer = hasTokenizer ? tokenizerFile(options.model(), config).open() : null) {
            for (List<Integer> ids : generated) {
                texts.add(tokenizer == null ? null : tokenizer.decode(ids.stream().mapToLong(Integer::longValue)
                        .toArray()));
            }
        }
        if (bestOf == null) {
            return new Result(promptIds, List.of(new Answer(generated.get(0), texts.get(0), OptionalDouble.empty())),
                    OptionalInt.empty(), promptLogits);
        }
        OptionalDouble[] rewards = score(options, texts);
        List<Answer> answers = new ArrayList<>();
        int best = -1;
        for (int i = 0; i < n; i++) {
            answers.add(new Answer(generated.get(i), texts.get(i), rewards[i]));
            if (rewards[i].isPresent() && (best < 0 || rewards[i].getAsDouble() > rewards[best].getAsDouble())) {
                best = i;
            }
        }
        if (best < 0) {
            throw new IllegalStateException("all " + n + " answers are empty: no chat to score; ask for more "
                    + "new tokens or another temperature");
        }
        return new Result(promptIds, List.copyOf(answers), OptionalInt.of(best), promptLogits);
    }

    /** Each answer's reward on [system, user: prompt, assistant: answer]; empty for an empty answer. */
    private static OptionalDouble[] score(Options options, List<String> answers) {
        BestOf bestOf = options.bestOf();
        Prompt prompt = options.prompt();
        String user = prompt instanceof Prompt.Chat chat ? chat.message() : ((Prompt.Text) prompt).text();
        String system = prompt instanceof Prompt.Chat chat ? chat.system() : null;
        ModelConfig config = readConfig(options.model());
        List<long[]> sequences = new ArrayList<>();
        List<Integer> scored = new ArrayList<>();
        try (RewardSequences chats = new RewardSequences(tokenizerFile(options.model(), config),
                bestOf.rewardTemplate(), RewardSequences.defaultMaxSeqLen(config))) {
            for (int i = 0; i < answers.size(); i++) {
                if (answers.get(i).isEmpty()) {
                    continue;
                }
                List<Message> messages = new ArrayList<>();
                if (system != null) {
                    messages.add(new Message(Role.SYSTEM, system));
                }
                messages.add(new Message(Role.USER, user));
                messages.add(new Message(Role.ASSISTANT, answers.get(i)));
                try {
                    sequences.add(chats.chat(new Conversation(messages, "answer " + (i + 1))));
                } catch (InvalidRecordException e) {
                    throw new InvalidOptions("prompt", "cannot be scored with its answer " + (i + 1) + ": "
                            + e.getMessage());
                }
                scored.add(i);
            }
        }
        OptionalDouble[] rewards = new OptionalDouble[answers.size()];
        java.util.Arrays.fill(rewards, OptionalDouble.empty());
        if (sequences.isEmpty()) {
            return rewards;
        }
        float[] values;
        try (RewardScorer scorer = RewardScorer.load(options.model(), bestOf.rewardAdapter(), options.linears(),
                options.device())) {
            values = scorer.rewards(sequences, 1);
        }
        for (int k = 0; k < scored.size(); k++) {
            rewards[scored.get(k)] = OptionalDouble.of(values[k]);
        }
        return rewards;
    }

    /**
     * The prompt as token ids, from the model's files alone: text with BOS, a chat rendered with its generation
     * prompt, or ids checked against the vocabulary.
     *
     * @param adapterDir the adapter whose chat template a chat prompt uses, or null
     */
    public static long[] promptIds(Prompt prompt, Path modelDir, Path adapterDir, ModelConfig config) {
        if (prompt instanceof Prompt.Ids ids) {
            for (long id : ids.ids()) {
                if (id < 0 || id >= config.vocabSize()) {
                    throw new InvalidOptions("prompt", "token id " + id + " is outside the vocabulary [0, "
                            + config.vocabSize() + ")");
                }
            }
            return ids.ids().clone();
        }
        TokenizerFile tokenizerFile = tokenizerFile(modelDir, config);
        try (TextTokenizer tokenizer = tokenizerFile.open()) {
            if (prompt instanceof Prompt.Chat chat) {
                return new ModelChat(ModelChat.template(tokenizerFile, adapterDir), tokenizer, chat.system())
                        .ask(chat.message());
            }
            // The prompt is text: what it spells, "</s>" or "[INST]" included, is never a control token.
            long[] ids = tokenizer.encode(((Prompt.Text) prompt).text(), true);
            if (ids.length == 0) {
                // no BOS and no post-processor: transformers' generate() raises without input ids too
                throw new InvalidOptions("prompt", "is empty and " + tokenizerFile.name() + " adds no token to it (the "
                        + "model has no BOS and its post-processor writes none): give some text or --prompt-ids");
            }
            return ids;
        }
    }

    private static ModelConfig readConfig(Path modelDir) {
        try {
            return ModelConfig.read(modelDir.resolve("config.json"));
        } catch (IllegalArgumentException e) {
            throw new InvalidOptions("model", modelDir + ": " + e.getMessage());
        }
    }

    /** The model folder's generation_config.json, or config.json's EOS and transformers' defaults without one. */
    public static GenerationConfig generationConfig(Path modelDir) {
        ModelConfig config = readConfig(modelDir);
        try {
            return GenerationConfig.read(modelDir, config);
        } catch (IllegalArgumentException e) {
            throw new InvalidOptions("model", e.getMessage());
        }
    }

    /** The model's tokenizer, checked as every command checks it ({@link TrainingData#tokenizer}). */
    public static TokenizerFile tokenizerFile(Path modelDir, ModelConfig config) {
        try {
            return TrainingData.tokenizer(modelDir, config, false);
        } catch (IllegalArgumentException e) {
            throw new InvalidOptions("model", e.getMessage());
        }
    }
}
