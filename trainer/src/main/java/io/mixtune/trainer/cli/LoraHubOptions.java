package io.mixtune.trainer.cli;

import io.mixtune.merging.LoraHub;
import io.mixtune.trainer.Merging;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import org.apache.commons.cli.CommandLine;

/**
 * `mixtune merge --method lorahub --base MODEL --inputs A,B,... --data FEW.jsonl [--budget N] [--seed S]
 * [--quantize nf4] --out DIR`:
 * the command line of {@link Merging#loraHub}. Not a {@code MergeMethod}: it needs a model and data, which no other merge
 * reads, so it has its own path beside {@code ModelMerge}.
 */
final class LoraHubOptions {
    static final String METHOD = "lorahub";
    /** merge's options that set what other methods merge by; lorahub finds its weights itself. */
    private static final List<String> NOT_LORAHUB = List.of("config", "weights", "density", "t", "decay", "lambda",
            "normalize", "last", "rank", "dtype");

    private LoraHubOptions() {}

    static int run(CommandLine line, PrintStream out) {
        for (String option : NOT_LORAHUB) {
            if (line.hasOption(option)) {
                throw new UsageException("--method lorahub takes no --" + option + ": it searches the weights itself"
                        + " (--budget, --seed) and writes the exact weighted sum of the adapters");
            }
        }
        if (!line.hasOption("base")) {
            throw new UsageException("--method lorahub needs --base, the model the adapters were trained on: it scores"
                    + " each composition on the --data examples with it");
        }
        List<Path> inputs = Arrays.stream(Mixtune.requiredOption(line, "inputs").split(",")).map(String::trim)
                .filter(s -> !s.isEmpty()).map(Path::of).toList();
        int budget = Mixtune.intOption(line, "budget", LoraHub.DEFAULT_BUDGET);
        long seed = Mixtune.intOption(line, "seed", 0);
        Merging lorahub = Merging.loraHub(Path.of(line.getOptionValue("base")), inputs,
                Path.of(Mixtune.requiredOption(line, "data")), Path.of(Mixtune.requiredOption(line, "out")))
                .force(line.hasOption("force")).budget(budget).seed(seed)
                .quantization(ModelLoading.quantization(line.getOptionValue("quantize")))
                .device(Mixtune.device(line));
        lorahub.run().lines().forEach(out::println);
        return Mixtune.OK;
    }
}
