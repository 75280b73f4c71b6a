package io.mixtune.trainer.cli;

import io.mixtune.trainer.MergeAdapter;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Locale;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/** `mixtune merge-adapter`: the command line of {@link MergeAdapter}, a LoRA adapter folded into its base. */
final class MergeAdapterCommand implements Command {

    @Override
    public String name() {
        return "merge-adapter";
    }

    @Override
    public String summary() {
        return "fold a LoRA adapter into its base model (W + scale * B A), streaming one tensor at a time";
    }

    @Override
    public String usage() {
        return "--model DIR --adapter DIR --out DIR [--dtype bf16|fp16|fp32] [--force]";
    }

    @Override
    public Options options() {
        return new Options()
                .addOption(Mixtune.option("model", "DIR", "the base model directory"))
                .addOption(Mixtune.option("adapter", "DIR", "the LoRA adapter (PEFT format)"))
                .addOption(Mixtune.option("out", "DIR", "directory for the merged checkpoint (not the base's)"))
                .addOption(Mixtune.option("dtype", "TYPE", "dtype of the merged weights: bf16, fp16 or fp32 "
                        + "(default: each tensor's own)"))
                .addOption(Mixtune.option("force", null, "write into a non-empty --out, replacing the files merging "
                        + "writes (weights, index, config and tokenizer files) and keeping any other"));
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
        MergeAdapter merge = MergeAdapter.of(Path.of(Mixtune.requiredOption(line, "model")),
                Path.of(Mixtune.requiredOption(line, "adapter")), Path.of(Mixtune.requiredOption(line, "out")));
        if (line.hasOption("dtype")) {
            merge.dtype(InitModelCommand.parseDtype(line.getOptionValue("dtype")));
        }
        MergeAdapter.Result result = merge.force(line.hasOption("force")).run();
        out.printf(Locale.ROOT, "merged %s into %s: %d safetensors file(s) in %s%n", result.adapter(), result.model(),
                result.weightFiles().size(), result.out());
        return Mixtune.OK;
    }
}
