package io.mixtune.trainer.cli;

import io.mixtune.merging.gguf.GgufFileType;
import io.mixtune.merging.gguf.GgufLoraExport;
import io.mixtune.trainer.InputDirectories;
import io.mixtune.trainer.InvalidOptionException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Locale;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * `mixtune export-lora-gguf`: a LoRA adapter as a GGUF LoRA adapter (llama.cpp's convert_lora_to_gguf.py), which
 * llama.cpp's --lora and Ollama's ADAPTER apply to a GGUF base at run time.
 */
final class ExportLoraGgufCommand implements Command {

    @Override
    public String name() {
        return "export-lora-gguf";
    }

    @Override
    public String summary() {
        return "write a LoRA adapter as a GGUF adapter for llama.cpp --lora and Ollama ADAPTER";
    }

    @Override
    public String usage() {
        return "--model DIR --adapter DIR --out FILE.gguf [--type f32|f16|q8_0] [--name NAME] [--force]";
    }

    @Override
    public Options options() {
        return new Options()
                .addOption(Mixtune.option("model", "DIR", "the base model directory (its config.json is read, as the "
                        + "converter's --base)"))
                .addOption(Mixtune.option("adapter", "DIR", "the LoRA adapter (PEFT format) to write"))
                .addOption(Mixtune.option("out", "FILE", "the .gguf file to write (not inside an input)"))
                .addOption(Mixtune.option("type", "TYPE", "type of lora_a and lora_b: f32 (default), f16 or q8_0 "
                        + "(rows that are not whole blocks of 32 fall back to f16), as convert_lora_to_gguf.py"))
                .addOption(Mixtune.option("name", "NAME", "general.name (default: the adapter folder's name, titled)"))
                .addOption(Mixtune.option("force", null, "replace an existing --out"));
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
        Path model = Path.of(Mixtune.requiredOption(line, "model"));
        Path adapter = Path.of(Mixtune.requiredOption(line, "adapter"));
        Path target = Path.of(Mixtune.requiredOption(line, "out"));
        InputDirectories.requireModel("model", model);
        InputDirectories.requireAdapter("adapter", adapter);
        GgufLoraExport export = GgufLoraExport.of(model, adapter, target).force(line.hasOption("force"));
        GgufLoraExport.Result result;
        try {
            if (line.hasOption("type")) {
                String type = line.getOptionValue("type");
                if (type.equalsIgnoreCase("bf16") || type.equalsIgnoreCase("auto")) {
                    throw new IllegalArgumentException("--type " + type + " (convert_lora_to_gguf.py's) is not"
                            + " written: mixtune encodes no BF16 blocks; expected f32, f16 or q8_0");
                }
                export.type(GgufFileType.parse(type));
            }
            if (line.hasOption("name")) {
                export.name(line.getOptionValue("name"));
            }
            result = export.run();
        } catch (IllegalArgumentException e) {
            // GgufLoraExport checks its inputs and --out before it writes: what it refuses is the user's to fix
            throw new InvalidOptionException(null, e.getMessage(), e);
        }
        out.printf(Locale.ROOT, "wrote %s as a GGUF LoRA adapter (%s): %d tensors, %,d bytes, to %s%n", adapter,
                result.type().cliName(), result.tensors().size(), result.bytes(), result.out());
        return Mixtune.OK;
    }
}
