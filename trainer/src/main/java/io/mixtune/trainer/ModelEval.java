package io.mixtune.trainer;

import ai.djl.Device;
import ai.djl.ndarray.NDManager;
import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.DataReport;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.trainer.device.ComputeDevice;
import io.mixtune.trainer.proxy.ProxyEvaluation;
import io.mixtune.trainer.proxy.ProxyPair;
import io.mixtune.trainer.run.Evaluation;
import io.mixtune.trainer.run.TrainingBatch;
import io.mixtune.trainer.run.TrainingData;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.function.Consumer;

/**
 * Evaluation from Java, what {@code mixtune eval} runs: the loss and perplexity of a model, with or without an adapter
 * (or proxy-tuned by a small pair), on the assistant tokens of a chat file. The file goes through training's data
 * pipeline (template, truncation, packing) and {@link Evaluation}, so on a run's validation file the loss is the
 * eval_loss the run logged.
 *
 * <pre>{@code
 * ModelEval.Result result = ModelEval.of(Path.of("out/base-model"), Path.of("validation.jsonl"))
 *         .adapter(Path.of("out/adapter"))
 *         .quantization(Quantization.NF4)
 *         .maxSeqLen(128)
 *         .run();
 * double loss = result.loss();
 * }</pre>
 *
 * <p>Every input is checked before the model loads; what cannot be used throws {@link InvalidOptionException} naming
 * the option and file (a malformed data record: {@code InvalidRecordException} with its line). Nothing prints.
 */
public final class ModelEval {
    /** The longest row when none is given (or the model's max_position_embeddings if fewer). */
    public static final int DEFAULT_MAX_SEQ_LEN = 2048;

    /**
     * The chat template the data is rendered with, by data.template's name (resolved by DataConfig#chatTemplate, as
     * for training): mistral, chatml, auto (the model's chat_template, else mistral), hf (the model's, required) or
     * hf:NAME (the model's named template NAME, additional_chat_templates/NAME.jinja).
     *
     * @param configName the name data.template and --template use
     */
    public record Template(String configName) {
        public static final Template MISTRAL = new Template("mistral");
        public static final Template CHATML = new Template("chatml");
        public static final Template AUTO = new Template("auto");
        public static final Template HF = new Template("hf");

        /** @throws InvalidOptionException for another name (custom needs a recipe's custom_template) */
        public Template {
            boolean named = configName != null && configName.startsWith(DataConfig.NAMED)
                    && configName.length() > DataConfig.NAMED.length();
            if (!named && !List.of("mistral", "chatml", "auto", "hf").contains(configName)) {
                throw new InvalidOptionException("template", "--template expects mistral or chatml, got '"
                        + configName + "' (or auto, hf or hf:NAME: the model's chat_template, or its template NAME)");
            }
        }

        /** hf:NAME: the model's template NAME. */
        public static Template named(String name) {
            return new Template(DataConfig.NAMED + name);
        }
    }

    private final Path model;
    private final Path data;
    private Path adapter;
    private Quantization quantization = Quantization.NONE;
    private Template template = Template.MISTRAL;
    private Integer maxSeqLen;
    private int batchSize = 1;
    private Device device;
    private ProxyPair proxy;
    private Consumer<String> progress = note -> { };

    private ModelEval(Path model, Path data) {
        this.model = Objects.requireNonNull(model, "model");
        this.data = Objects.requireNonNull(data, "data");
    }

    /**
     * @param model a Hugging Face checkpoint directory (config.json, safetensors and its tokenizer.json)
     * @param data chats: JSONL or JSON, plain or gzip, any format mixtune trains on (detected per file)
     */
    public static ModelEval of(Path model, Path data) {
        return new ModelEval(model, data);
    }

    /** A LoRA adapter in PEFT format (a run's output_dir/adapter), loaded in inference mode: no dropout. */
    public ModelEval adapter(Path adapterDir) {
        this.adapter = adapterDir;
        return this;
    }

    /** NF4 loads the linear layers in 4 bits as QLoRA training does; NONE (default) as stored. */
    public ModelEval quantization(Quantization value) {
        this.quantization = Objects.requireNonNull(value, "quantization");
        return this;
    }

    public ModelEval template(Template value) {
        this.template = Objects.requireNonNull(value, "template");
        return this;
    }

    /**
     * The longest sample, as data.max_seq_len (longer chats lose trailing turns, as in training), and the packed row
     * length; default {@value #DEFAULT_MAX_SEQ_LEN} or the model's max_position_embeddings if fewer.
     */
    public ModelEval maxSeqLen(int value) {
        this.maxSeqLen = value;
        return this;
    }

    /** Packed rows per forward pass (default 1). */
    public ModelEval batchSize(int value) {
        this.batchSize = value;
        return this;
    }

    /** Where the model runs; default: the GPU when libtorch has CUDA and sees one, else the CPU. */
    public ModelEval device(Device value) {
        this.device = value;
        return this;
    }

    /** Proxy-tunes the model by a small pair: the logits are the model's + alpha (tuned - base). */
    public ModelEval proxy(ProxyPair pair) {
        this.proxy = pair;
        return this;
    }

    /** Receives a line at each stage (data read, model loaded); nothing else is told. */
    public ModelEval progress(Consumer<String> listener) {
        this.progress = Objects.requireNonNull(listener, "listener");
        return this;
    }

    /**
     * What was evaluated and the loss on it.
     *
     * @param modelType the model's model_type (mistral, mixtral)
     * @param adapter the adapter on the model, or null
     * @param proxy "base DIR, tuned DIR, alpha A" when proxy-tuned, else null
     * @param dataReport what the data became: samples, tokens, truncations
     * @param loss mean cross-entropy per target token (eval_loss)
     * @param targetTokens how many target tokens were scored (eval_target_tokens)
     */
    public record Result(Path model, String modelType, Quantization quantization, Path adapter, String proxy,
            Path data, DataReport dataReport, Template template, int maxSeqLen, double loss, long targetTokens) {
        /** exp(loss), eval_perplexity. */
        public double perplexity() {
            return Math.exp(loss);
        }

        /** The numbers under the names training's metrics.jsonl gives them: eval_loss, eval_perplexity, eval_target_tokens. */
        public Map<String, Number> metrics() {
            Map<String, Number> metrics = new LinkedHashMap<>();
            metrics.put("eval_loss", loss);
            metrics.put("eval_perplexity", perplexity());
            metrics.put("eval_target_tokens", targetTokens);
            return metrics;
        }
    }

    /** Checks every input, reads the data, then loads the model (and adapter, and proxy pair) and evaluates. */
    public Result run() {
        Device on = device != null ? device : ComputeDevice.choose("auto");
        InputDirectories.requireModel("model", model);
        Path dataFile = DataConfig.file(data.toString());
        if (Files.isDirectory(dataFile)) {
            throw new InvalidOptionException("data", "--data " + data + ": is a directory, expected a data file (JSONL"
                    + " or JSON, plain or gzip)");
        }
        if (!Files.isRegularFile(dataFile)) {
            throw new InvalidOptionException("data", "--data " + data + ": no such file");
        }
        if (batchSize < 1) {
            throw new InvalidOptionException("batch-size", "--batch-size must be at least 1, got " + batchSize);
        }
        if (adapter != null) {
            checkAdapter();
        }
        ModelConfig config;
        try {
            config = ModelConfig.read(model.resolve("config.json"));
        } catch (IllegalArgumentException e) {
            throw new InvalidOptionException("model", "--model " + model + ": " + e.getMessage(), e);
        }
        if (proxy != null) {
            proxy.check(model, config);
        }
        // Samples are cut to max_seq_len, and a packed row restarts positions at each sample: no position past it.
        int rowLength = maxSeqLen != null ? maxSeqLen : Math.min(DEFAULT_MAX_SEQ_LEN, config.maxPositionEmbeddings());
        if (rowLength < 2) {
            throw new InvalidOptionException("max-seq-len", "--max-seq-len must be at least 2, got " + rowLength);
        }
        if (rowLength > config.maxPositionEmbeddings()) {
            throw new InvalidOptionException("max-seq-len", "--max-seq-len " + rowLength + " exceeds"
                    + " max_position_embeddings " + config.maxPositionEmbeddings() + " of " + model.resolve(
                    "config.json") + ": the model has no position beyond it");
        }

        // The data before the model: a bad file is reported before any weight loads.
        SampleCache.TokenizerFile tokenizer;
        try {
            tokenizer = TrainingData.tokenizer(model, config, false);
        } catch (IllegalArgumentException e) {
            throw new InvalidOptionException("model", "--model " + e.getMessage(), e);
        }
        DataConfig dataConfig = new DataConfig(List.of(data.toString()), List.of(), 0, "auto", template.configName(),
                null, rowLength, true, "all_assistant_turns", false);
        String noDefault = List.of("auto", "hf").contains(template.configName()) ? tokenizer.noDefaultTemplate() : null;
        if (noDefault != null) {
            // as training refuses data.template auto or hf there (DataConfig#chatTemplate), in this command's words
            throw new InvalidOptionException("template", "--template " + template.configName() + ": " + noDefault
                    + ": give --template hf:NAME (--model " + model + ")");
        }
        try {
            dataConfig.chatTemplate(tokenizer); // as training resolves data.template; a template the model lacks named
        } catch (IllegalArgumentException e) {
            throw new InvalidOptionException("template", "--" + e.getMessage() + " (--model " + model + ")", e);
        }
        ChatDataset dataset = SampleCache.tokenize(dataConfig, tokenizer, 0);
        List<TokenizedSample> samples = dataset.train();
        if (samples.stream().mapToInt(TokenizedSample::targetCount).sum() == 0) {
            throw new InvalidOptionException("data", "--data " + data + ": no assistant token to score ("
                    + dataset.report() + ")");
        }
        progress.accept("data " + data + ": " + dataset.report());

        try (NDManager manager = NDManager.newBaseManager(on);
                CausalLm lm = MistralCheckpoint.load(model, manager, quantization.linears());
                ProxyPair.Loaded pair = proxy == null ? null : proxy.load(lm, manager, quantization)) {
            if (adapter != null) {
                try {
                    PeftAdapter.load(new LoraModel(lm), adapter, "default"); // inference mode: no dropout
                } catch (IllegalArgumentException e) {
                    throw new InvalidOptionException("adapter", "--adapter " + adapter + ": " + e.getMessage(), e);
                }
            }
            progress.accept("model " + model + " loaded" + (adapter == null ? "" : " with adapter " + adapter));
            List<TrainingBatch> batches = Evaluation.batches(samples, true, rowLength, batchSize, config.eosTokenId());
            Evaluation.Result result = pair == null ? Evaluation.of(lm, batches, manager)
                    : ProxyEvaluation.of(pair.tuning(), batches, manager);
            return new Result(model, config.modelType().hfName(), quantization, adapter,
                    pair == null ? null : pair.description(), data, dataset.report(), template, rowLength,
                    result.loss(), result.targets());
        }
    }

    private void checkAdapter() {
        InputDirectories.requireAdapter("adapter", adapter);
        try {
            PeftAdapter.readConfig(adapter.resolve(PeftAdapter.CONFIG_FILE));
        } catch (IllegalArgumentException e) {
            throw new InvalidOptionException("adapter", "--adapter " + adapter + ": " + e.getMessage(), e);
        }
    }
}
