package io.mixtune.trainer.cli;

import ai.djl.Device;
import ai.djl.ndarray.NDManager;
import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.trainer.run.Evaluation;
import io.mixtune.trainer.run.TrainingBatch;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.proxy.ProxyEvaluation;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * `mixtune eval`: loss and perplexity of a model, with or without an adapter, on the assistant tokens of a chat file.
 * The file goes through training's data pipeline (template, truncation, packing) and {@link Evaluation}, so on a
 * run's validation file it prints the eval_loss the run logged.
 */
final class EvalCommand implements Command {
    private static final int DEFAULT_MAX_SEQ_LEN = 2048;

    @Override
    public String name() {
        return "eval";
    }

    @Override
    public String summary() {
        return "loss and perplexity on the assistant tokens of a chat file (what training logs as eval_loss)";
    }

    @Override
    public String usage() {
        return "--model DIR [--adapter DIR] [--quantize nf4|none] --data FILE [--template mistral|chatml|auto|hf] "
                + "[--max-seq-len N] [--batch-size N] [--device auto|cpu|gpu] [--proxy-base DIR (--proxy-tuned DIR"
                + " | --proxy-adapter DIR) [--proxy-alpha A]]";
    }

    @Override
    public Options options() {
        return ProxyModels.addOptions(new Options())
                .addOption(Mixtune.option("model", "DIR", "Hugging Face model directory (config.json, safetensors "
                        + "and its tokenizer.json)"))
                .addOption(Mixtune.option("adapter", "DIR", "a LoRA adapter in PEFT format, such as a run's "
                        + "output_dir/adapter"))
                .addOption(Mixtune.option("quantize", "TYPE", "nf4 to load the linear layers in 4 bits as QLoRA "
                        + "training does, or none (default)"))
                .addOption(Mixtune.option("data", "FILE", "chats (JSONL or JSON, plain or gzip; any format mixtune "
                        + "trains on, detected per file)"))
                .addOption(Mixtune.option("template", "T", "mistral (default), chatml, auto or hf (the model's "
                        + "chat_template from its tokenizer_config.json)"))
                .addOption(Mixtune.option("max-seq-len", "N", "longest sample, as data.max_seq_len (longer chats lose "
                        + "trailing turns, as in training), and the packed row length (default "
                        + DEFAULT_MAX_SEQ_LEN + ", or the model's max_position_embeddings if fewer)"))
                .addOption(Mixtune.option("batch-size", "N", "packed rows per forward pass (default 1)"))
                .addOption(Mixtune.deviceOption());
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
        Path modelDir = Path.of(Mixtune.requiredOption(line, "model"));
        if (Files.isRegularFile(modelDir)) {
            throw new UsageException("--model " + modelDir + ": is a file, expected a Hugging Face checkpoint directory "
                    + "(config.json + safetensors)");
        }
        Device device = Mixtune.device(line);
        if (!Files.isDirectory(modelDir)) {
            throw new UsageException("--model " + modelDir + ": no such directory (expected a Hugging Face checkpoint)");
        }
        if (!Files.isRegularFile(modelDir.resolve("config.json"))) {
            throw new UsageException("--model " + modelDir + ": no Hugging Face checkpoint there (config.json missing)");
        }
        String dataFile = Mixtune.requiredOption(line, "data");
        if (Files.isDirectory(DataConfig.file(dataFile))) {
            throw new UsageException("--data " + dataFile + ": is a directory, expected a data file (JSONL or JSON, "
                    + "plain or gzip)");
        }
        if (!Files.isRegularFile(DataConfig.file(dataFile))) {
            throw new UsageException("--data " + dataFile + ": no such file");
        }
        String template = line.getOptionValue("template", "mistral");
        if (!List.of("mistral", "chatml", "auto", "hf").contains(template)) {
            throw new UsageException("--template expects mistral or chatml, got '" + template + "' (or auto or hf: "
                    + "the model's chat_template)");
        }
        int batchSize = Mixtune.intOption(line, "batch-size", 1);
        if (batchSize < 1) {
            throw new UsageException("--batch-size must be at least 1, got " + batchSize);
        }
        Path adapterDir = line.hasOption("adapter") ? Path.of(line.getOptionValue("adapter")) : null;
        if (adapterDir != null) {
            if (Files.isRegularFile(adapterDir)) {
                throw new UsageException("--adapter " + adapterDir + ": is a file, expected a PEFT adapter directory "
                        + "(adapter_config.json + adapter_model.safetensors)");
            }
            if (!Files.isDirectory(adapterDir)) {
                throw new UsageException("--adapter " + adapterDir + ": no such directory (expected a PEFT adapter)");
            }
            if (!Files.isRegularFile(adapterDir.resolve(PeftAdapter.CONFIG_FILE))) {
                throw new UsageException("--adapter " + adapterDir + ": no PEFT adapter there ("
                        + PeftAdapter.CONFIG_FILE + " missing)");
            }
            try {
                PeftAdapter.readConfig(adapterDir.resolve(PeftAdapter.CONFIG_FILE));
            } catch (IllegalArgumentException e) {
                throw new UsageException("--adapter " + adapterDir + ": " + e.getMessage());
            }
        }
        MistralCheckpoint.LinearFactory linears = ModelLoading.linearFactory(line.getOptionValue("quantize"));

        // The data first: a bad file is reported before the model loads.
        ModelConfig config;
        try {
            config = ModelConfig.read(modelDir.resolve("config.json"));
        } catch (IllegalArgumentException e) {
            throw new UsageException("--model " + modelDir + ": " + e.getMessage());
        }
        boolean proxied = ProxyModels.requested(line);
        if (proxied) {
            ProxyModels.check(line, modelDir, config);
        }
        // Samples are cut to max_seq_len, and a packed row restarts positions at each sample: no position past it.
        int maxSeqLen = Mixtune.intOption(line, "max-seq-len", Math.min(DEFAULT_MAX_SEQ_LEN,
                config.maxPositionEmbeddings()));
        if (maxSeqLen < 2) {
            throw new UsageException("--max-seq-len must be at least 2, got " + maxSeqLen);
        }
        if (maxSeqLen > config.maxPositionEmbeddings()) {
            throw new UsageException("--max-seq-len " + maxSeqLen + " exceeds max_position_embeddings "
                    + config.maxPositionEmbeddings() + " of " + modelDir.resolve("config.json") + ": the model has no "
                    + "position beyond it");
        }
        SampleCache.TokenizerFile tokenizer;
        try {
            tokenizer = TrainingData.tokenizer(modelDir, config, false);
        } catch (IllegalArgumentException e) {
            throw new UsageException("--model " + e.getMessage());
        }
        DataConfig data = new DataConfig(List.of(dataFile), List.of(), 0, "auto", template, null, maxSeqLen, true,
                "all_assistant_turns", false);
        ChatDataset dataset = SampleCache.tokenize(data, tokenizer, 0);
        List<TokenizedSample> samples = dataset.train();
        if (samples.stream().mapToInt(TokenizedSample::targetCount).sum() == 0) {
            throw new UsageException("--data " + dataFile + ": no assistant token to score (" + dataset.report() + ")");
        }

        try (NDManager manager = NDManager.newBaseManager(device);
                CausalLm model = MistralCheckpoint.load(modelDir, manager, linears);
                ProxyModels proxy = proxied ? ProxyModels.load(line, model, manager) : null) {
            if (adapterDir != null) {
                try {
                    PeftAdapter.load(new LoraModel(model), adapterDir, "default"); // inference mode: no dropout
                } catch (IllegalArgumentException e) {
                    throw new UsageException("--adapter " + adapterDir + ": " + e.getMessage());
                }
            }
            List<TrainingBatch> batches = Evaluation.batches(samples, true, maxSeqLen,
                    batchSize, config.eosTokenId());
            Evaluation.Result result = proxy == null ? Evaluation.of(model, batches, manager)
                    : ProxyEvaluation.of(proxy.tuning(), batches, manager);
            out.printf(Locale.ROOT, "model %s (%s%s)%s%n", modelDir, config.modelType().hfName(),
                    "nf4".equalsIgnoreCase(line.getOptionValue("quantize")) ? ", NF4 base" : "",
                    adapterDir == null ? "" : " + adapter " + adapterDir);
            if (proxy != null) {
                out.printf(Locale.ROOT, "proxy-tuned by %s%n", proxy.description());
            }
            out.printf(Locale.ROOT, "data %s: %s; template %s, max_seq_len %d%n", dataFile, dataset.report(),
                    template, maxSeqLen);
            out.printf(Locale.ROOT, "loss %.7f  perplexity %.4f  target_tokens %d%n", result.loss(),
                    result.perplexity(), result.targets());
        }
        return Mixtune.OK;
    }
}
