package io.mixtune.trainer.cli;

import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.safetensors.DType;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.Locale;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/** `mixtune init-model`: a random-weight Hugging Face checkpoint from a preset in configs/models/. */
final class InitModelCommand implements Command {
    /** Above this the preset is a shape for memory plans, not something to write to disk with random weights. */
    static final long MAX_MATERIALISED_PARAMETERS = 2_000_000_000L;

    private static final List<String> TOKENIZER_FILES = List.of("tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "tokenizer.model");

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
        return "--preset NAME --out DIR [--seed S] [--dtype bf16|fp16|fp32] [--force]";
    }

    @Override
    public Options options() {
        return new Options()
                .addOption(Mixtune.option("preset", "NAME", "model preset: " + String.join(", ", ModelPreset.NAMES)))
                .addOption(Mixtune.option("out", "DIR", "directory to write config.json, safetensors, tokenizer to"))
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
        ModelConfig config;
        try {
            config = ModelPreset.load(presetName);
        } catch (IllegalArgumentException e) {
            throw new UsageException(e.getMessage());
        }
        long parameters = config.parameterCount();
        if (parameters > MAX_MATERIALISED_PARAMETERS) {
            throw new IllegalArgumentException(String.format(Locale.ROOT,
                    "preset %s has %.1fB parameters: it holds the real shapes for memory plans and is never written "
                            + "with random weights; use tiny-mistral or tiny-mixtral", presetName, parameters / 1e9));
        }
        if (Files.exists(outDir.resolve("config.json")) && !line.hasOption("force")) {
            throw new IllegalArgumentException(outDir + " already holds a checkpoint (config.json): pass --force to "
                    + "overwrite it");
        }
        RandomCheckpoint.write(config, outDir, seed, dtype, RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES);
        if (config.vocabSize() == ModelPreset.MISTRAL_V1_VOCAB_SIZE) {
            copyMistralTokenizer(outDir);
        }
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

    private static void copyMistralTokenizer(Path outDir) throws IOException {
        String folder = ModelPreset.MISTRAL_V1_TOKENIZER.substring(0, ModelPreset.MISTRAL_V1_TOKENIZER.lastIndexOf('/') + 1);
        for (String file : TOKENIZER_FILES) {
            try (InputStream in = InitModelCommand.class.getClassLoader().getResourceAsStream(folder + file)) {
                if (in != null) {
                    Files.copy(in, outDir.resolve(file), StandardCopyOption.REPLACE_EXISTING);
                }
            }
        }
    }
}
