package io.mixtune.trainer.cli;

import io.mixtune.trainer.ModelEval;
import io.mixtune.trainer.Quantization;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Locale;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * `mixtune eval`: the command line of {@link ModelEval}, the loss and perplexity of a model, with or without an
 * adapter, on the assistant tokens of a chat file (on a run's validation file, the eval_loss the run logged).
 */
final class EvalCommand implements Command {
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
                        + "chat_template), hf:NAME (its additional_chat_templates/NAME.jinja), as data.template"))
                .addOption(Mixtune.option("max-seq-len", "N", "longest sample, as data.max_seq_len (longer chats lose "
                        + "trailing turns, as in training), and the packed row length (default "
                        + ModelEval.DEFAULT_MAX_SEQ_LEN + ", or the model's max_position_embeddings if fewer)"))
                .addOption(Mixtune.option("batch-size", "N", "packed rows per forward pass (default 1)"))
                .addOption(Mixtune.deviceOption());
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
        ModelEval eval = ModelEval.of(Path.of(Mixtune.requiredOption(line, "model")),
                Path.of(Mixtune.requiredOption(line, "data")));
        eval.device(Mixtune.device(line));
        eval.template(new ModelEval.Template(line.getOptionValue("template", "mistral")));
        eval.batchSize(Mixtune.intOption(line, "batch-size", 1));
        if (line.hasOption("adapter")) {
            eval.adapter(Path.of(line.getOptionValue("adapter")));
        }
        eval.quantization(ModelLoading.quantization(line.getOptionValue("quantize")));
        if (line.hasOption("max-seq-len")) {
            eval.maxSeqLen(Mixtune.intOption(line, "max-seq-len", 0));
        }
        if (ProxyModels.requested(line)) {
            eval.proxy(ProxyModels.pair(line));
        }
        ModelEval.Result result = eval.run();
        out.printf(Locale.ROOT, "model %s (%s%s)%s%n", result.model(), result.modelType(),
                result.quantization() == Quantization.NF4 ? ", NF4 base" : "",
                result.adapter() == null ? "" : " + adapter " + result.adapter());
        if (result.proxy() != null) {
            out.printf(Locale.ROOT, "proxy-tuned by %s%n", result.proxy());
        }
        out.printf(Locale.ROOT, "data %s: %s; template %s, max_seq_len %d%n", result.data(), result.dataReport(),
                result.template().configName(), result.maxSeqLen());
        out.printf(Locale.ROOT, "loss %.7f  perplexity %.4f  target_tokens %d%n", result.loss(),
                result.perplexity(), result.targetTokens());
        return Mixtune.OK;
    }
}
