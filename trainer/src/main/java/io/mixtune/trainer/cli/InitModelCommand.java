package io.mixtune.trainer.cli;

import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.safetensors.DType;
import io.mixtune.trainer.PresetCheckpoint;
import io.mixtune.trainer.Refusal;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.OptionalInt;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/** `mixtune init-model`: a random-weight Hugging Face checkpoint from a preset in configs/models/. */
final class InitModelCommand implements Command {
    @Override
    public String name() {
        return "init-model";
    }

    @Override
    public String summary() {
        return "write a random-weight checkpoint from a preset (" + String.join(", ", ModelPreset.NAMES) + ")";
    }

    @Override
    public String usage() {
        return "--preset NAME --out DIR [--layers N] [--seed S] [--dtype bf16|fp16|fp32] [--force]";
    }

    @Override
    public Options options() {
        return new Options()
                .addOption(Mixtune.option("preset", "NAME", "model preset: " + String.join(", ", ModelPreset.NAMES)))
                .addOption(Mixtune.option("out", "DIR", "directory to write config.json, safetensors, tokenizer to"))
                .addOption(Mixtune.option("layers", "N", "only the first N decoder layers, the preset's real shapes "
                        + "otherwise (any preset: mistral-7b and mixtral-8x7b included, for device checks)"))
                .addOption(Mixtune.option("seed", "S", "random seed (default 0)"))
                .addOption(Mixtune.option("dtype", "TYPE", "weight dtype in the file: bf16 (default), fp16 or fp32"))
                .addOption(Mixtune.option("force", null, "overwrite a checkpoint already in --out"));
    }

    @Override
    public int run(CommandLine line, PrintStream out) throws IOException {
        String presetName = Mixtune.requiredOption(line, "preset");
        Path outDir = Path.of(Mixtune.requiredOption(line, "out"));
        long seed = Mixtune.intOption(line, "seed", 0);
        DType dtype = parseDtype(line.getOptionValue("dtype", "bf16"));
        if (Files.exists(outDir.resolve("config.json")) && !line.hasOption("force")) {
            throw new Refusal(outDir + " already holds a checkpoint (config.json): pass --force to "
                    + "overwrite it");
        }
        if (!ModelPreset.NAMES.contains(presetName)) {
            throw new UsageException("no model preset named \"" + presetName + "\": expected one of " + ModelPreset.NAMES);
        }
        int layers = Mixtune.intOption(line, "layers", 0);
        if (line.hasOption("layers") && layers < 1) {
            throw new UsageException("--layers expects a positive number of decoder layers, got " + layers);
        }
        ModelConfig config = PresetCheckpoint.write(presetName, line.hasOption("layers") ? OptionalInt.of(layers)
                : OptionalInt.empty(), outDir, seed, dtype);
        long parameters = config.parameterCount();
        out.printf(Locale.ROOT, "wrote %s (%s, %,d parameters, %s, seed %d) to %s%n", presetName,
                config.modelType().hfName(), parameters, dtype, seed, outDir);
        return Mixtune.OK;
    }

    static DType parseDtype(String value) {
        return switch (value.toLowerCase(Locale.ROOT)) {
            case "bf16", "bfloat16" -> DType.BF16;
            case "fp16", "f16", "float16" -> DType.F16;
            case "fp32", "f32", "float32" -> DType.F32;
            default -> throw new UsageException("--dtype expects bf16, fp16 or fp32, got '" + value + "'");
        };
    }
}
