package io.mixtune.trainer.cli;

import ai.djl.ndarray.NDManager;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.generate.ProxyTuning;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.trainer.proxy.ProxyPair;
import java.nio.file.Path;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * The proxy-tuning options that `generate` and `eval` share (--proxy-base, --proxy-tuned or --proxy-adapter,
 * --proxy-alpha, --proxy-quantize): the command line of a {@link ProxyPair}, which checks them against the large model
 * before any weight loads and then loads the small pair beside it.
 */
final class ProxyModels implements AutoCloseable {
    private final ProxyPair.Loaded loaded;

    private ProxyModels(ProxyPair.Loaded loaded) {
        this.loaded = loaded;
    }

    static Options addOptions(Options options) {
        return options
                .addOption(Mixtune.option("proxy-base", "DIR", "proxy-tuning: the small untuned model; the logits are"
                        + " --model's + alpha (tuned - base)"))
                .addOption(Mixtune.option("proxy-tuned", "DIR", "proxy-tuning: the small tuned model (a checkpoint)"))
                .addOption(Mixtune.option("proxy-adapter", "DIR", "proxy-tuning: the small tuned model as --proxy-base"
                        + " plus this PEFT adapter"))
                .addOption(Mixtune.option("proxy-alpha", "A", "proxy-tuning: the weight of (tuned - base) (default 1)"))
                .addOption(Mixtune.option("proxy-quantize", "TYPE", "load the small models' linear layers in 4 bits:"
                        + " nf4 or none (default: as --quantize)"));
    }

    /** Whether the command line asks for proxy-tuning; a partial request is a usage error. */
    static boolean requested(CommandLine line) {
        boolean any = line.hasOption("proxy-tuned") || line.hasOption("proxy-adapter") || line.hasOption("proxy-alpha")
                || line.hasOption("proxy-quantize");
        if (!line.hasOption("proxy-base")) {
            if (any) {
                throw new UsageException("--proxy-tuned, --proxy-adapter, --proxy-alpha and --proxy-quantize need"
                        + " --proxy-base, the small untuned model");
            }
            return false;
        }
        if (line.hasOption("proxy-tuned") == line.hasOption("proxy-adapter")) {
            throw new UsageException("--proxy-base needs exactly one of --proxy-tuned (a tuned checkpoint) and"
                    + " --proxy-adapter (a PEFT adapter on --proxy-base)");
        }
        return true;
    }

    /** The pair the options name; {@link #requested} said there is one. */
    static ProxyPair pair(CommandLine line) {
        return new ProxyPair(Path.of(line.getOptionValue("proxy-base")),
                line.hasOption("proxy-tuned") ? Path.of(line.getOptionValue("proxy-tuned")) : null,
                line.hasOption("proxy-adapter") ? Path.of(line.getOptionValue("proxy-adapter")) : null,
                Mixtune.doubleOption(line, "proxy-alpha", 1.0),
                line.hasOption("proxy-quantize") ? ModelLoading.quantization(line.getOptionValue("proxy-quantize"))
                        : null);
    }

    /** {@link ProxyPair#check}: the small models against the large one, from their files. */
    static void check(CommandLine line, Path largeDir, ModelConfig large) {
        pair(line).check(largeDir, large);
    }

    /** Loads the small models beside the large one (on its manager's device); {@link #check} ran before. */
    static ProxyModels load(CommandLine line, CausalLm large, NDManager manager) {
        return new ProxyModels(pair(line).load(large, manager, ModelLoading.quantization(line.getOptionValue(
                "quantize"))));
    }

    ProxyTuning tuning() {
        return loaded.tuning();
    }

    /** "base DIR, tuned DIR, alpha A", for the command's report. */
    String description() {
        return loaded.description();
    }

    /** The most positions all three models take. */
    int maxPositionEmbeddings() {
        return loaded.maxPositionEmbeddings();
    }

    @Override
    public void close() {
        loaded.close();
    }
}
