package io.mixtune.trainer.cli;

import ai.djl.Device;
import ai.djl.ndarray.NDManager;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.generate.GenerationConfig;
import io.mixtune.model.generate.TokenSampler;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.Generation;
import io.mixtune.trainer.InputDirectories;
import io.mixtune.trainer.reward.RewardSequences;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalDouble;
import java.util.OptionalInt;
import java.util.stream.Collectors;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * `mixtune generate`: continue a prompt with a Hugging Face checkpoint, or with --best-of N pick the best of N sampled
 * answers by a reward model's score. The generating is {@link Generation}'s; this prints what it returns.
 */
final class GenerateCommand implements Command {
    private static final ObjectMapper JSON = new ObjectMapper();

    @Override
    public String name() {
        return "generate";
    }

    @Override
    public String summary() {
        return "continue a prompt with a model (greedy or sampled, KV-cached)";
    }

    @Override
    public String usage() {
        return "--model DIR [--adapter DIR] [--quantize nf4] (--prompt TEXT [--chat [--system TEXT]] | --prompt-ids 1,2,3)"
                + " [--best-of N --reward RM [--output FILE]]"
                + " [--proxy-base DIR (--proxy-tuned DIR | --proxy-adapter DIR) [--proxy-alpha A]] [options]";
    }

    @Override
    public Options options() {
        return ProxyModels.addOptions(new Options())
                .addOption(Mixtune.option("model", "DIR", "Hugging Face model directory (config.json + safetensors)"))
                .addOption(Mixtune.option("prompt", "TEXT", "prompt text, tokenized with the model's tokenizer.json "
                        + "(BOS added)"))
                .addOption(Mixtune.option("prompt-ids", "IDS", "prompt as comma-separated token ids (no tokenizer needed)"))
                .addOption(Mixtune.option("chat", null, "the prompt is a user's message: apply the chat template (the "
                        + "adapter's tokenizer_config.json, else the model's, else mistral) with the generation prompt"))
                .addOption(Mixtune.option("system", "TEXT", "with --chat: a system prompt before the message"))
                .addOption(Mixtune.option("adapter", "DIR", "apply a LoRA adapter in Hugging Face PEFT format"))
                .addOption(Mixtune.option("quantize", "TYPE", "load the linear layers in 4 bits: nf4 (QLoRA); "
                        + "default none"))
                .addOption(Mixtune.option("max-new-tokens", "N", "most tokens to generate (default 64)"))
                .addOptions(decodingOptions())
                .addOption(Mixtune.option("output-ids", null, "print the new token ids, comma-separated, as the last "
                        + "line of stdout"))
                .addOption(Mixtune.option("dump-logits", "FILE", "write the prompt's logits [prompt_len, vocab] "
                        + "float32 to FILE as safetensors (tensor 'logits')"))
                .addOption(Mixtune.option("best-of", "N", "sample N answers (answer i with seed S + i; needs "
                        + "--temperature), score each with --reward and print every reward, then the best answer"))
                .addOption(Mixtune.option("reward", "RM", "with --best-of: the reward model, a reward adapter trained "
                        + "on --model (train.method: reward); it scores the chat [--system, user: --prompt, assistant: "
                        + "answer] as `mixtune reward` scores a chat, on --model loaded as --quantize says"))
                .addOption(Mixtune.option("reward-template", "T", "with --best-of: the chat template the reward model "
                        + "was trained with, mistral (default) or chatml, as `mixtune reward --template`"))
                .addOption(Mixtune.option("output", "FILE", "with --best-of: every answer as JSONL (answer, seed, "
                        + "reward, best, text, ids)"))
                .addOption(Mixtune.deviceOption());
    }

    @Override
    public int run(CommandLine line, PrintStream out) throws IOException {
        Path modelDir = Path.of(Mixtune.requiredOption(line, "model"));
        Device device = Mixtune.device(line);
        if (line.hasOption("prompt") == line.hasOption("prompt-ids")) {
            throw new UsageException("give exactly one of --prompt and --prompt-ids");
        }
        if (line.hasOption("chat") && !line.hasOption("prompt")) {
            throw new UsageException("--chat applies the chat template to --prompt TEXT; it does not go with --prompt-ids");
        }
        if (line.hasOption("system") && !line.hasOption("chat")) {
            throw new UsageException("--system needs --chat: a system prompt is part of a chat template");
        }
        int maxNewTokens = Mixtune.intOption(line, "max-new-tokens", 64);
        if (maxNewTokens < 0) {
            throw new UsageException("--max-new-tokens must be >= 0, got " + maxNewTokens);
        }
        Generation.Decoding decoding = decoding(line);
        Generation.BestOf bestOf = bestOf(line);
        InputDirectories.requireModel("model", modelDir);
        GenerationConfig generationConfig = generationConfig(modelDir);
        TokenSampler.Settings settings = settings(decoding, generationConfig); // said on stderr
        if (bestOf != null && !settings.doSample()) {
            throw new UsageException("--best-of " + bestOf.n() + " samples its answers, but decoding is greedy (the "
                    + bestOf.n() + " answers would be one): give --temperature T > 0 (e.g. 0.8), and --seed S to "
                    + "choose the samples");
        }
        MistralCheckpoint.LinearFactory linears = ModelLoading.linearFactory(line.getOptionValue("quantize"));
        if (ProxyModels.requested(line)) {
            if (bestOf != null) {
                throw new UsageException("--best-of does not go with proxy-tuning (--proxy-base) yet");
            }
            return runProxied(line, out, modelDir, device, linears, maxNewTokens, decoding, generationConfig);
        }
        Generation.Prompt prompt = prompt(line);
        Path adapter = line.hasOption("adapter") ? Path.of(line.getOptionValue("adapter")) : null;
        Generation.Result result;
        try {
            result = Generation.run(new Generation.Options(modelDir, adapter, linears, device, prompt, maxNewTokens,
                    decoding, line.hasOption("dump-logits"), bestOf));
        } catch (Generation.InvalidOptions e) {
            throw usage(e, line, modelDir);
        }
        if (line.hasOption("dump-logits")) {
            dumpLogits(Path.of(line.getOptionValue("dump-logits")), result.promptLogits());
        }
        if (bestOf != null) {
            printBestOf(line, out, result, decoding);
        }
        Generation.Answer answer = result.best();
        if (answer.text() != null) {
            out.println(answer.text());
        } else if (!line.hasOption("output-ids")) {
            out.println(joinIds(answer.ids()));
        }
        if (line.hasOption("output-ids")) {
            out.println(joinIds(answer.ids()));
        }
        return Mixtune.OK;
    }

    /** Which flag sets each {@link Generation.Options} component, for its errors. */
    private static final Map<String, String> FLAGS = Map.of("model", "--model", "adapter", "--adapter", "prompt",
            "--prompt", "maxNewTokens", "--max-new-tokens", "decoding", "--temperature", "bestOf", "--best-of",
            "rewardAdapter", "--reward");

    /** --best-of N --reward DIR [--reward-template T], or null without --best-of. */
    private static Generation.BestOf bestOf(CommandLine line) {
        if (!line.hasOption("best-of")) {
            for (String option : List.of("reward", "reward-template", "output")) {
                if (line.hasOption(option)) {
                    throw new UsageException("--" + option + " goes with --best-of N: it is best-of-n's");
                }
            }
            return null;
        }
        int n = Mixtune.intOption(line, "best-of", 1);
        if (n < 1) {
            throw new UsageException("--best-of expects at least 1 answer, got " + n);
        }
        if (line.hasOption("prompt-ids")) {
            throw new UsageException("--best-of scores the prompt and each answer as a chat: give the prompt as "
                    + "--prompt TEXT, not --prompt-ids");
        }
        if (!line.hasOption("reward")) {
            throw new UsageException("--best-of " + n + " needs --reward DIR: the reward model (a reward adapter "
                    + "trained on --model, train.method: reward) that scores the answers");
        }
        return new Generation.BestOf(n, Path.of(line.getOptionValue("reward")),
                line.getOptionValue("reward-template", RewardSequences.DEFAULT_TEMPLATE));
    }

    /** Every answer's reward, one line each, then the best's (stdout); with --output, every answer as JSONL. */
    private static void printBestOf(CommandLine line, PrintStream out, Generation.Result result,
            Generation.Decoding decoding) throws IOException {
        List<Generation.Answer> answers = result.answers();
        int best = result.bestIndex().getAsInt();
        List<String> records = new ArrayList<>();
        for (int i = 0; i < answers.size(); i++) {
            Generation.Answer answer = answers.get(i);
            long seed = decoding.seed() + i;
            out.println(String.format(Locale.ROOT, "answer %d of %d (seed %d): ", i + 1, answers.size(), seed)
                    + (answer.reward().isPresent() ? String.format(Locale.ROOT, "reward %.4f%s",
                            answer.reward().getAsDouble(), i == best ? "  best" : "") : "empty, not scored"));
            ObjectNode record = JSON.createObjectNode().put("answer", i + 1).put("seed", seed);
            if (answer.reward().isPresent()) {
                record.put("reward", (float) answer.reward().getAsDouble());
            } else {
                record.putNull("reward");
            }
            record.put("best", i == best).put("text", answer.text());
            record.putPOJO("ids", answer.ids());
            records.add(JSON.writeValueAsString(record));
        }
        if (line.hasOption("output")) {
            Files.write(Path.of(line.getOptionValue("output")), records);
        }
    }

    /** Proxy-tuning: the large model steered by a small tuned and untuned pair, decoded in lockstep. */
    private static int runProxied(CommandLine line, PrintStream out, Path modelDir, Device device,
            MistralCheckpoint.LinearFactory linears, int maxNewTokens, Generation.Decoding decoding,
            GenerationConfig generationConfig) {
        ProxyModels.check(line, modelDir, readConfig(modelDir));
        try (NDManager manager = NDManager.newBaseManager(device);
                CausalLm model = MistralCheckpoint.load(modelDir, manager, linears);
                ProxyModels proxy = ProxyModels.load(line, model, manager)) {
            if (line.hasOption("adapter")) {
                PeftAdapter.load(new LoraModel(model), Path.of(line.getOptionValue("adapter")), "default");
            }
            Path adapter = line.hasOption("adapter") ? Path.of(line.getOptionValue("adapter")) : null;
            long[] promptIds;
            try {
                promptIds = Generation.promptIds(prompt(line), modelDir, adapter, model.config());
            } catch (Generation.InvalidOptions e) {
                throw usage(e, line, modelDir);
            }
            int positions = proxy.maxPositionEmbeddings();
            if (promptIds.length + (long) maxNewTokens > positions) {
                throw new UsageException("a prompt of " + promptIds.length + " tokens and --max-new-tokens "
                        + maxNewTokens + " exceed max_position_embeddings " + positions + " of the large or a small "
                        + "model: the model has no position beyond it; ask for at most "
                        + Math.max(0, positions - promptIds.length) + " new tokens");
            }
            List<float[]> promptLogits = line.hasOption("dump-logits") ? new ArrayList<>() : null;
            List<Integer> newIds = proxy.tuning().generator(generationConfig.eosTokenIds()).generate(promptIds,
                    maxNewTokens, decoding.sampler(generationConfig, 0), promptLogits);
            if (promptLogits != null) {
                dumpLogits(Path.of(line.getOptionValue("dump-logits")), promptLogits);
            }
            if (Files.isRegularFile(modelDir.resolve("tokenizer.json"))) {
                try (TextTokenizer tokenizer = tokenizer(modelDir, model)) {
                    out.println(tokenizer.decode(newIds.stream().mapToLong(Integer::longValue).toArray()));
                }
            } else if (!line.hasOption("output-ids")) {
                out.println(joinIds(newIds));
            }
            if (line.hasOption("output-ids")) {
                out.println(joinIds(newIds));
            }
        }
        return Mixtune.OK;
    }

    /** The model's generation_config.json (config.json's EOS and transformers' defaults without one). */
    static GenerationConfig generationConfig(Path modelDir) {
        try {
            return Generation.generationConfig(modelDir);
        } catch (Generation.InvalidOptions e) {
            throw new UsageException(e.describe("--model"));
        }
    }

    private static ModelConfig readConfig(Path modelDir) {
        try {
            return ModelConfig.read(modelDir.resolve("config.json"));
        } catch (IllegalArgumentException e) {
            throw new UsageException("--model " + modelDir + ": " + e.getMessage());
        }
    }

    /** The flags that sample: any of them asks for sampling, whatever generation_config.json's do_sample says. */
    private static final List<String> SAMPLING_FLAGS = List.of("temperature", "top-k", "top-p", "min-p", "seed");

    /** generate's and chat's decoding flags. */
    static Options decodingOptions() {
        return new Options()
                .addOption(Mixtune.option("greedy", null, "always take the most likely token (the default, unless the "
                        + "model's generation_config.json has do_sample: true)"))
                .addOption(Mixtune.option("temperature", "T", "sample, with this temperature (default: "
                        + "generation_config.json's, else 1)"))
                .addOption(Mixtune.option("top-k", "K", "sample from the K most likely tokens; 0 keeps all (default: "
                        + "generation_config.json's, else 50, as transformers)"))
                .addOption(Mixtune.option("top-p", "P", "sample, keeping the most likely tokens up to mass P (default: "
                        + "generation_config.json's, else 1)"))
                .addOption(Mixtune.option("min-p", "P", "sample, dropping tokens less likely than P times the most "
                        + "likely one (default: generation_config.json's, else off)"))
                .addOption(Mixtune.option("repetition-penalty", "R", "divide the positive logits (multiply the "
                        + "negative ones) of every token in the prompt and answer by R, greedy or sampled (default: "
                        + "generation_config.json's, else 1: none)"))
                .addOption(Mixtune.option("seed", "S", "sample, from this random seed (default 0)"));
    }

    /**
     * --greedy, or sampling if any of --temperature, --top-k, --top-p, --min-p and --seed is given; otherwise what the
     * model's generation_config.json says (greedy without it). Values not given come from that file, else
     * transformers' defaults.
     */
    static Generation.Decoding decoding(CommandLine line) {
        List<String> given = SAMPLING_FLAGS.stream().filter(line::hasOption).map(flag -> "--" + flag).toList();
        if (line.hasOption("greedy") && !given.isEmpty()) {
            throw new UsageException("--greedy does not go with " + String.join(", ", given) + ": they sample");
        }
        Optional<Boolean> doSample = line.hasOption("greedy") ? Optional.of(false)
                : given.isEmpty() ? Optional.empty() : Optional.of(true);
        try {
            return new Generation.Decoding(doSample, doubleOption(line, "temperature"), intOption(line, "top-k"),
                    doubleOption(line, "top-p"), doubleOption(line, "min-p"), doubleOption(line, "repetition-penalty"),
                    Mixtune.intOption(line, "seed", 0));
        } catch (IllegalArgumentException e) {
            throw new UsageException(e.getMessage());
        }
    }

    private static OptionalDouble doubleOption(CommandLine line, String name) {
        return line.hasOption(name) ? OptionalDouble.of(Mixtune.doubleOption(line, name, 0)) : OptionalDouble.empty();
    }

    private static OptionalInt intOption(CommandLine line, String name) {
        return line.hasOption(name) ? OptionalInt.of(Mixtune.intOption(line, name, 0)) : OptionalInt.empty();
    }

    /**
     * The settings decoding uses on this model, said on stderr where they are not what the flags show: sampled (top-k
     * and the rest filled in), or taken from generation_config.json.
     */
    static TokenSampler.Settings settings(Generation.Decoding decoding, GenerationConfig model) {
        TokenSampler.Settings settings;
        try {
            settings = decoding.settings(model);
        } catch (Generation.InvalidOptions e) {
            throw new UsageException(e.describe("--model"));
        }
        if (settings.doSample() || model.file() != null) {
            System.err.println("decoding: " + settings.describe() + (settings.doSample() ? ", seed " + decoding.seed()
                    : "") + "; stops at " + (model.eosTokenIds().size() == 1 ? "EOS id " + model.eosTokenIds().get(0)
                    : "any of the EOS ids " + model.eosTokenIds()) + (model.file() == null ? ""
                    : " (defaults from " + model.file() + ")"));
        }
        return settings;
    }

    /** The model's tokenizer, checked as every command checks it (TrainingData.tokenizer). */
    static TextTokenizer tokenizer(Path modelDir, CausalLm model) {
        return tokenizerFile(modelDir, model).open();
    }

    static TokenizerFile tokenizerFile(Path modelDir, CausalLm model) {
        try {
            return Generation.tokenizerFile(modelDir, model.config());
        } catch (Generation.InvalidOptions e) {
            throw new UsageException(e.describe("--model") + (Files.isRegularFile(modelDir.resolve(
                    "tokenizer.json")) ? "" : "; or give the prompt as --prompt-ids"));
        }
    }

    /** The prompt from --prompt, --chat [--system] or --prompt-ids. */
    private static Generation.Prompt prompt(CommandLine line) {
        if (line.hasOption("chat")) {
            return new Generation.Prompt.Chat(line.getOptionValue("prompt"), line.getOptionValue("system"));
        }
        if (line.hasOption("prompt")) {
            return new Generation.Prompt.Text(line.getOptionValue("prompt"));
        }
        String[] parts = line.getOptionValue("prompt-ids").split(",");
        long[] ids = new long[parts.length];
        for (int i = 0; i < parts.length; i++) {
            try {
                ids[i] = Long.parseLong(parts[i].trim());
            } catch (NumberFormatException e) {
                throw new UsageException("--prompt-ids expects comma-separated integers, got '" + parts[i].trim() + "'");
            }
        }
        return new Generation.Prompt.Ids(ids);
    }

    /** A {@link Generation.InvalidOptions} as the flag that set the option says it. */
    private static UsageException usage(Generation.InvalidOptions e, CommandLine line, Path modelDir) {
        if (e.option().equals("prompt") && line.hasOption("prompt-ids")) {
            return new UsageException(e.describe("--prompt-ids:"));
        }
        String message = e.describe(FLAGS.get(e.option()));
        if (e.option().equals("model") && !Files.isRegularFile(modelDir.resolve("tokenizer.json"))) {
            message += "; or give the prompt as --prompt-ids";
        }
        return new UsageException(message);
    }

    private static String joinIds(List<Integer> ids) {
        return ids.stream().map(String::valueOf).collect(Collectors.joining(","));
    }

    private static void dumpLogits(Path file, List<float[]> rows) {
        int vocab = rows.get(0).length;
        float[] flat = new float[rows.size() * vocab];
        for (int r = 0; r < rows.size(); r++) {
            System.arraycopy(rows.get(r), 0, flat, r * vocab, vocab);
        }
        TensorSpec spec = new TensorSpec("logits", DType.F32, new long[] {rows.size(), vocab});
        SafetensorsWriter.writeFile(file, List.of(spec), s -> flat);
    }
}
