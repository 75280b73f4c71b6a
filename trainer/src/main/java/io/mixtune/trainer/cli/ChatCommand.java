package io.mixtune.trainer.cli;

import ai.djl.Device;
import ai.djl.ndarray.NDManager;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.generate.GenerationConfig;
import io.mixtune.model.generate.Generator;
import io.mixtune.model.generate.TokenSampler;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.Generation;
import io.mixtune.trainer.InputDirectories;
import io.mixtune.trainer.chat.ModelChat;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * `mixtune chat`: a conversation with a model on standard input, one message per line, each answer printed as it is
 * generated with the whole conversation so far as the prompt ({@link ModelChat}); an empty line is skipped, end of
 * input or "/exit" ends it.
 */
final class ChatCommand implements Command {
    private final InputStream in;

    ChatCommand() {
        this(System.in);
    }

    ChatCommand(InputStream in) {
        this.in = in;
    }

    @Override
    public String name() {
        return "chat";
    }

    @Override
    public String summary() {
        return "talk with a model: one message per line on stdin, answered with its chat template";
    }

    @Override
    public String usage() {
        return "--model DIR [--adapter DIR] [--quantize nf4] [--system TEXT] [options]";
    }

    @Override
    public Options options() {
        return new Options()
                .addOption(Mixtune.option("model", "DIR", "Hugging Face model directory (config.json + safetensors "
                        + "+ tokenizer.json)"))
                .addOption(Mixtune.option("adapter", "DIR", "apply a LoRA adapter in Hugging Face PEFT format; its "
                        + "tokenizer_config.json's chat template (the one it was trained with) comes first"))
                .addOption(Mixtune.option("quantize", "TYPE", "load the linear layers in 4 bits: nf4 (QLoRA); "
                        + "default none"))
                .addOption(Mixtune.option("system", "TEXT", "a system prompt for the whole conversation"))
                .addOption(Mixtune.option("max-new-tokens", "N", "most tokens per answer (default 256)"))
                .addOptions(GenerateCommand.decodingOptions())
                .addOption(Mixtune.deviceOption());
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
        Path modelDir = Path.of(Mixtune.requiredOption(line, "model"));
        Device device = Mixtune.device(line);
        int maxNewTokens = Mixtune.intOption(line, "max-new-tokens", 256);
        if (maxNewTokens < 1) {
            throw new UsageException("--max-new-tokens must be >= 1, got " + maxNewTokens);
        }
        Generation.Decoding decoding = GenerateCommand.decoding(line);
        InputDirectories.requireModel("model", modelDir);
        GenerationConfig generationConfig = GenerateCommand.generationConfig(modelDir);
        TokenSampler sampler = new TokenSampler(GenerateCommand.settings(decoding, generationConfig), decoding.seed());
        MistralCheckpoint.LinearFactory linears = ModelLoading.linearFactory(line.getOptionValue("quantize"));
        Path adapter = line.hasOption("adapter") ? Path.of(line.getOptionValue("adapter")) : null;
        if (adapter != null) {
            InputDirectories.requireAdapter("adapter", adapter);
        }
        try (NDManager manager = NDManager.newBaseManager(device);
                CausalLm model = MistralCheckpoint.load(modelDir, manager, linears)) {
            if (adapter != null) {
                PeftAdapter.load(new LoraModel(model), adapter, "default");
            }
            TokenizerFile tokenizerFile = GenerateCommand.tokenizerFile(modelDir, model);
            try (TextTokenizer tokenizer = tokenizerFile.open();
                    BufferedReader input = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
                ModelChat chat = new ModelChat(ModelChat.template(tokenizerFile, adapter), tokenizer,
                        line.getOptionValue("system"));
                Generator generator = new Generator(model, generationConfig.eosTokenIds());
                int positions = model.config().maxPositionEmbeddings();
                for (String message = input.readLine(); message != null; message = input.readLine()) {
                    if (message.isBlank()) {
                        continue;
                    }
                    if (message.strip().equals("/exit")) {
                        break;
                    }
                    long[] prompt = chat.ask(message);
                    int budget = Math.min(maxNewTokens, positions - prompt.length);
                    if (budget < 1) {
                        throw new IllegalArgumentException("the conversation has grown to " + prompt.length
                                + " tokens, the model's max_position_embeddings is " + positions
                                + ": start a new chat");
                    }
                    List<Integer> newIds = generator.generate(prompt, budget, sampler, null);
                    out.println(chat.answer(newIds.stream().mapToLong(Integer::longValue).toArray()));
                    out.flush();
                }
            } catch (IOException e) {
                throw new UncheckedIOException("cannot read the chat from standard input: " + e.getMessage(), e);
            }
        }
        return Mixtune.OK;
    }
}
