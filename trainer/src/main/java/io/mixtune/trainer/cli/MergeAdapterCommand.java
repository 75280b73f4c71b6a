package io.mixtune.trainer.cli;

import io.mixtune.lora.adapter.AdapterMerge;
import io.mixtune.model.checkpoint.PathOverlap;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.checkpoint.StagingDirectory;
import io.mixtune.model.safetensors.DType;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/** `mixtune merge-adapter`: fold a LoRA adapter into its base, as a plain Hugging Face checkpoint. */
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
        Path modelDir = Path.of(Mixtune.requiredOption(line, "model"));
        Path adapterDir = Path.of(Mixtune.requiredOption(line, "adapter"));
        Path outDir = Path.of(Mixtune.requiredOption(line, "out"));
        DType dtype = line.hasOption("dtype") ? InitModelCommand.parseDtype(line.getOptionValue("dtype")) : null;
        for (Path input : List.of(modelDir, adapterDir)) {
            String problem = PathOverlap.problem("--out", outDir, input);
            if (problem != null) {
                throw new UsageException(problem);
            }
        }
        if (Files.exists(outDir) && !Files.isDirectory(outDir)) {
            throw new UsageException("--out " + outDir + " is a file; expected a directory for the merged checkpoint");
        }
        if (!line.hasOption("force") && !StagingDirectory.isEmptyOrAbsent(outDir)) {
            throw new UsageException("--out " + outDir + " exists and is not empty; choose another --out, or pass "
                    + "--force to replace the files merging writes there (any other file stays)");
        }
        List<Path> files = AdapterMerge.merge(modelDir, adapterDir, outDir, dtype, RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES);
        out.printf(Locale.ROOT, "merged %s into %s: %d safetensors file(s) in %s%n", adapterDir, modelDir, files.size(),
                outDir);
        return Mixtune.OK;
    }
}
