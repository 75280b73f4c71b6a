package io.mixtune.trainer.cli;

import io.mixtune.merging.LoraHub;
import io.mixtune.merging.MergeConfig;
import io.mixtune.merging.MergeMethod;
import io.mixtune.trainer.Merging;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * `mixtune merge`: the command line of {@link Merging}, average or merge checkpoints or PEFT adapters (mergekit's
 * methods, plus swa, lawa, ema, warm, and lorahub).
 */
final class MergeCommand implements Command {
    /** The options that spell out a merge on the command line; a config file replaces all of them. */
    private static final List<String> INLINE = List.of("method", "inputs", "weights", "base", "density", "t", "seed",
            "decay", "lambda", "normalize", "last", "rank", "dtype", "data", "budget", "quantize");

    @Override
    public String name() {
        return "merge";
    }

    @Override
    public String summary() {
        return "average or merge models or LoRA adapters (linear, swa, lawa, ema, warm, task_arithmetic, ties, dare,"
                + " breadcrumbs, della, slerp, nuslerp, multislerp, nearswap, karcher, sce, arcee_fusion, ram,"
                + " model_stock, passthrough, lorahub)";
    }

    @Override
    public String usage() {
        return "CONFIG.yml OUT_DIR | --config CONFIG.yml [--out DIR] | --method M --inputs A,B,... [--weights W1,W2,...]"
                + " [--base DIR] [--density D] [--t T] [--seed S] --out DIR | --method lorahub --base MODEL"
                + " --inputs A,B,... --data FEW.jsonl [--budget N] [--seed S] [--quantize nf4] --out DIR";
    }

    /** mergekit-yaml's two arguments; both optional, since the options can say everything instead. */
    @Override
    public List<String> arguments() {
        return List.of("CONFIG", "OUT_DIR");
    }

    @Override
    public int requiredArguments() {
        return 0;
    }

    @Override
    public Options options() {
        return new Options()
                .addOption(Mixtune.option("config", "FILE", "a mergekit YAML file (merge_method, base_model, models or one"
                        + " slice, parameters as numbers, gradients or filters, dtype, tokenizer_source, out), also"
                        + " given as the first argument; replaces the options below but --out"))
                .addOption(Mixtune.option("method", "M", String.join(", ", MergeMethod.names()) + ", "
                        + LoraHubOptions.METHOD))
                .addOption(Mixtune.option("inputs", "DIRS", "comma-separated model or PEFT adapter directories, or a"
                        + " training run (RUN/checkpoints/step-N) for swa, lawa and ema"))
                .addOption(Mixtune.option("weights", "W1,W2", "one weight per input (linear and task-vector methods;"
                        + " default 1 each)"))
                .addOption(Mixtune.option("base", "DIR", "base model: task vectors are measured from it (task_arithmetic,"
                        + " ties, dare_*); slerp's first end"))
                .addOption(Mixtune.option("density", "D", "fraction of each task vector kept, in (0, 1] (ties, dare_*)"))
                .addOption(Mixtune.option("t", "T", "slerp position in [0, 1]: 0 the first model, 1 the second"))
                .addOption(Mixtune.option("seed", "S", "seed of dare's drop masks and of lorahub's search (default 0)"))
                .addOption(Mixtune.option("decay", "D", "ema decay in [0, 1), checkpoints ordered oldest first"))
                .addOption(Mixtune.option("lambda", "L", "scales the merged task vector (default 1)"))
                .addOption(Mixtune.option("normalize", "BOOL", "divide by the sum of the weights (default: true for"
                        + " linear and ties, false otherwise)"))
                .addOption(Mixtune.option("last", "K", "swa, lawa, ema: average the latest K checkpoints"))
                .addOption(Mixtune.option("rank", "R", "adapters: re-compress the summed ranks to R by SVD and report"
                        + " the error"))
                .addOption(Mixtune.option("dtype", "TYPE", "bf16, fp16 or fp32 (default: the base's, or the first input's)"))
                .addOption(Mixtune.option("out", "DIR", "output directory, written as OUT.tmp-* and renamed when complete"))
                .addOption(Mixtune.option("force", null, "replace a non-empty --out"))
                .addOption(Mixtune.option("data", "FILE", "lorahub: a few example chats of the new task; the weights"
                        + " minimise the loss on their assistant tokens"))
                .addOption(Mixtune.option("budget", "N", "lorahub: loss evaluations of the search (default "
                        + LoraHub.DEFAULT_BUDGET + ")"))
                .addOption(Mixtune.option("quantize", "TYPE", "lorahub: load --base's linear layers as nf4 (adapters"
                        + " trained with QLoRA) or none (default)"));
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
        if (LoraHubOptions.METHOD.equalsIgnoreCase(line.getOptionValue("method", ""))) {
            return LoraHubOptions.run(line, out);
        }
        for (String lorahubOnly : List.of("data", "budget", "quantize")) {
            if (line.hasOption(lorahubOnly)) {
                throw new UsageException("--" + lorahubOnly + " goes with --method lorahub only");
            }
        }
        List<String> arguments = line.getArgList();
        if (!arguments.isEmpty() && line.hasOption("config")) {
            throw new UsageException("give the config file once: as the first argument or as --config");
        }
        boolean fromFile = line.hasOption("config") || !arguments.isEmpty();
        Merging merging = fromFile ? fromFile(line, arguments) : Merging.of(fromOptions(line));
        merging.force(line.hasOption("force")).run().lines().forEach(out::println);
        return Mixtune.OK;
    }

    private static Merging fromFile(CommandLine line, List<String> arguments) {
        for (String option : INLINE) {
            if (line.hasOption(option)) {
                throw new UsageException("a config file and --" + option + " exclude each other: the file says"
                        + " everything but the output directory and --force");
            }
        }
        if (arguments.size() == 2 && line.hasOption("out")) {
            throw new UsageException("give the output directory once: as OUT_DIR or as --out");
        }
        String out = arguments.size() == 2 ? arguments.get(1) : line.getOptionValue("out");
        return Merging.fromYaml(Path.of(arguments.isEmpty() ? line.getOptionValue("config") : arguments.get(0)),
                out == null ? null : Path.of(out));
    }

    private static MergeConfig fromOptions(CommandLine line) {
        try {
            List<Path> inputs = split(Mixtune.requiredOption(line, "inputs")).stream().map(Path::of).toList();
            List<Double> weights = line.hasOption("weights")
                    ? split(line.getOptionValue("weights")).stream().map(w -> number("weights", w)).toList()
                    : null;
            Double density = optionalNumber(line, "density");
            MergeConfig.Parameters parameters = new MergeConfig.Parameters(null, density,
                    line.hasOption("normalize") ? bool(line.getOptionValue("normalize")) : null,
                    optionalNumber(line, "lambda"), optionalNumber(line, "t"), optionalNumber(line, "decay"), null, null);
            return new MergeConfig(
                    MergeMethod.parse(Mixtune.requiredOption(line, "method")),
                    line.hasOption("base") ? Path.of(line.getOptionValue("base")) : null,
                    MergeConfig.models(inputs, weights),
                    parameters,
                    line.hasOption("last") ? Mixtune.intOption(line, "last", 0) : null,
                    line.hasOption("rank") ? Mixtune.intOption(line, "rank", 0) : null,
                    line.hasOption("seed") ? seed(line.getOptionValue("seed")) : null,
                    line.hasOption("dtype") ? MergeConfig.parseDtype(line.getOptionValue("dtype")) : null,
                    Path.of(Mixtune.requiredOption(line, "out")));
        } catch (IllegalArgumentException e) {
            throw new UsageException(e.getMessage());
        }
    }

    private static List<String> split(String list) {
        return Arrays.stream(list.split(",")).map(String::trim).filter(s -> !s.isEmpty()).toList();
    }

    private static Double optionalNumber(CommandLine line, String name) {
        return line.hasOption(name) ? Mixtune.doubleOption(line, name, 0) : null;
    }

    private static double number(String option, String value) {
        try {
            return Double.parseDouble(value);
        } catch (NumberFormatException e) {
            throw new UsageException("--" + option + " expects numbers, got '" + value + "'");
        }
    }

    private static long seed(String value) {
        try {
            return Long.parseLong(value.trim());
        } catch (NumberFormatException e) {
            throw new UsageException("--seed expects an integer, got '" + value + "'");
        }
    }

    private static boolean bool(String value) {
        return switch (value.toLowerCase(Locale.ROOT)) {
            case "true", "yes", "1" -> true;
            case "false", "no", "0" -> false;
            default -> throw new UsageException("--normalize expects true or false, got '" + value + "'");
        };
    }
}
