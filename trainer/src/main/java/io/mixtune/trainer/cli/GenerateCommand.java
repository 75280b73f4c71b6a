package io.mixtune.trainer.cli;

import ai.djl.Device;
import ai.djl.ndarray.NDManager;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.generate.Generator;
import io.mixtune.model.generate.TokenSampler;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.chat.ModelChat;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Collectors;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/** `mixtune generate`: continue a prompt with a Hugging Face checkpoint. */
final class GenerateCommand implements Command {

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
                .addOption(Mixtune.option("greedy", null, "always take the most likely token (the default)"))
                .addOption(Mixtune.option("temperature", "T", "sample with this temperature instead of greedy"))
                .addOption(Mixtune.option("top-p", "P", "nucleus sampling: keep the most likely tokens up to mass P "
                        + "(default 1)"))
                .addOption(Mixtune.option("seed", "S", "random seed for sampling (default 0)"))
                .addOption(Mixtune.option("output-ids", null, "print the new token ids, comma-separated, as the last "
                        + "line of stdout"))
                .addOption(Mixtune.option("dump-logits", "FILE", "write the prompt's logits [prompt_len, vocab] "
                        + "float32 to FILE as safetensors (tensor 'logits')"))
                .addOption(Mixtune.deviceOption());
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
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
        TokenSampler sampler = sampler(line);
        if (Files.isRegularFile(modelDir)) {
            throw new UsageException("--model " + modelDir + ": is a file, expected a Hugging Face checkpoint directory "
                    + "(config.json + safetensors)");
        }
        if (!Files.isDirectory(modelDir)) {
            throw new IllegalArgumentException(modelDir + ": no such model directory");
        }
        MistralCheckpoint.LinearFactory linears = ModelLoading.linearFactory(line.getOptionValue("quantize"));
        boolean proxied = ProxyModels.requested(line);
        if (proxied) {
            ProxyModels.check(line, modelDir, readConfig(modelDir));
        }
        try (NDManager manager = NDManager.newBaseManager(device);
                CausalLm model = MistralCheckpoint.load(modelDir, manager, linears);
                ProxyModels proxy = proxied ? ProxyModels.load(line, model, manager) : null) {
            if (line.hasOption("adapter")) {
                PeftAdapter.load(new LoraModel(model), Path.of(line.getOptionValue("adapter")), "default");
            }
            long[] promptIds = line.hasOption("chat") ? chatPrompt(modelDir, model, line)
                    : line.hasOption("prompt") ? tokenize(modelDir, model, line.getOptionValue("prompt"))
                    : parseIds(line.getOptionValue("prompt-ids"), model.config().vocabSize());
            int positions = proxy == null ? model.config().maxPositionEmbeddings() : proxy.maxPositionEmbeddings();
            if (promptIds.length + (long) maxNewTokens > positions) {
                throw new UsageException("a prompt of " + promptIds.length + " tokens and --max-new-tokens "
                        + maxNewTokens + " exceed max_position_embeddings " + positions + " of "
                        + (proxy == null ? modelDir.resolve("config.json") : "the large or a small model")
                        + ": the model has no position beyond it; ask for at most "
                        + Math.max(0, positions - promptIds.length) + " new tokens");
            }
            List<float[]> promptLogits = line.hasOption("dump-logits") ? new ArrayList<>() : null;
            Generator generator = proxy == null ? new Generator(model) : proxy.tuning().generator();
            List<Integer> newIds = generator.generate(promptIds, maxNewTokens, sampler, promptLogits);
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

    private static ModelConfig readConfig(Path modelDir) {
        try {
            return ModelConfig.read(modelDir.resolve("config.json"));
        } catch (IllegalArgumentException e) {
            throw new UsageException("--model " + modelDir + ": " + e.getMessage());
        }
    }

    /** The prompt as the user's message of a chat, rendered with the chat template's generation prompt. */
    private static long[] chatPrompt(Path modelDir, CausalLm model, CommandLine line) {
        TokenizerFile tokenizerFile = tokenizerFile(modelDir, model);
        Path adapter = line.hasOption("adapter") ? Path.of(line.getOptionValue("adapter")) : null;
        try (TextTokenizer tokenizer = tokenizerFile.open()) {
            ModelChat chat = new ModelChat(ModelChat.template(tokenizerFile, adapter), tokenizer,
                    line.getOptionValue("system"));
            return chat.ask(line.getOptionValue("prompt"));
        }
    }

    static TokenSampler sampler(CommandLine line) {
        boolean sampling = line.hasOption("temperature") || line.hasOption("top-p") || line.hasOption("seed");
        if (line.hasOption("greedy") && sampling) {
            throw new UsageException("--greedy does not go with --temperature, --top-p or --seed");
        }
        if (!sampling) {
            return TokenSampler.greedy();
        }
        double temperature = Mixtune.doubleOption(line, "temperature", 1.0);
        double topP = Mixtune.doubleOption(line, "top-p", 1.0);
        try {
            return TokenSampler.sampling(temperature, topP, Mixtune.intOption(line, "seed", 0));
        } catch (IllegalArgumentException e) {
            throw new UsageException(e.getMessage());
        }
    }

    /** The prompt is text: what it spells, "</s>" or "[INST]" included, is never a control token. */
    private static long[] tokenize(Path modelDir, CausalLm model, String prompt) {
        try (TextTokenizer tokenizer = tokenizer(modelDir, model)) {
            return tokenizer.encode(prompt, true);
        }
    }

    /** The model's tokenizer, checked as every command checks it (TrainingData.tokenizer). */
    static TextTokenizer tokenizer(Path modelDir, CausalLm model) {
        return tokenizerFile(modelDir, model).open();
    }

    static TokenizerFile tokenizerFile(Path modelDir, CausalLm model) {
        try {
            return TrainingData.tokenizer(modelDir, model.config(), false);
        } catch (IllegalArgumentException e) {
            throw new UsageException("--model " + e.getMessage() + (Files.isRegularFile(modelDir.resolve(
                    "tokenizer.json")) ? "" : "; or give the prompt as --prompt-ids"));
        }
    }

    static long[] parseIds(String text, int vocabSize) {
        String[] parts = text.split(",");
        long[] ids = new long[parts.length];
        for (int i = 0; i < parts.length; i++) {
            try {
                ids[i] = Long.parseLong(parts[i].trim());
            } catch (NumberFormatException e) {
                throw new UsageException("--prompt-ids expects comma-separated integers, got '" + parts[i].trim() + "'");
            }
            if (ids[i] < 0 || ids[i] >= vocabSize) {
                throw new UsageException("--prompt-ids: token id " + ids[i] + " is outside the vocabulary [0, "
                        + vocabSize + ")");
            }
        }
        return ids;
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
