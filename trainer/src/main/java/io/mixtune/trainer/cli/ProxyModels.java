package io.mixtune.trainer.cli;

import ai.djl.ndarray.NDManager;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.generate.ProxyTuning;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * The proxy-tuning options that `generate` and `eval` share (--proxy-base, --proxy-tuned or --proxy-adapter,
 * --proxy-alpha, --proxy-quantize): checks them against the large model before any weight loads, then loads the small
 * pair beside it into a {@link ProxyTuning}.
 */
final class ProxyModels implements AutoCloseable {
    private final List<CausalLm> loaded;
    private final ProxyTuning tuning;
    private final String description;

    private ProxyModels(List<CausalLm> loaded, ProxyTuning tuning, String description) {
        this.loaded = loaded;
        this.tuning = tuning;
        this.description = description;
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

    /**
     * Checks the small models against the large one from their files (config.json, tokenizer.json), loading nothing:
     * the same vocab_size, and the same token-to-id map wherever a model has a tokenizer.json.
     */
    static void check(CommandLine line, Path largeDir, ModelConfig large) {
        Path baseDir = directory(line, "proxy-base");
        check(largeDir, large, "--proxy-base", baseDir);
        if (line.hasOption("proxy-tuned")) {
            check(largeDir, large, "--proxy-tuned", directory(line, "proxy-tuned"));
        } else {
            Path adapterDir = Path.of(line.getOptionValue("proxy-adapter"));
            if (!Files.isRegularFile(adapterDir.resolve(PeftAdapter.CONFIG_FILE))) {
                throw new UsageException("--proxy-adapter " + adapterDir + ": no PEFT adapter there ("
                        + PeftAdapter.CONFIG_FILE + " missing)");
            }
        }
        double alpha = Mixtune.doubleOption(line, "proxy-alpha", 1.0);
        if (!Double.isFinite(alpha)) {
            throw new UsageException("--proxy-alpha expects a finite number, got " + line.getOptionValue("proxy-alpha"));
        }
    }

    private static void check(Path largeDir, ModelConfig large, String option, Path smallDir) {
        ModelConfig small;
        try {
            small = ModelConfig.read(smallDir.resolve("config.json"));
        } catch (IllegalArgumentException e) {
            throw new UsageException(option + " " + smallDir + ": " + e.getMessage());
        }
        if (small.vocabSize() != large.vocabSize()) {
            throw new UsageException(option + " " + smallDir + ": vocab_size " + small.vocabSize() + " but "
                    + large.vocabSize() + " in --model " + largeDir + ": proxy-tuning adds logits token by token,"
                    + " so the models need one vocabulary");
        }
        Path largeTokenizer = largeDir.resolve("tokenizer.json");
        Path smallTokenizer = smallDir.resolve("tokenizer.json");
        if (Files.isRegularFile(largeTokenizer) != Files.isRegularFile(smallTokenizer)) {
            Path missing = Files.isRegularFile(largeTokenizer) ? smallTokenizer : largeTokenizer;
            throw new UsageException(option + " " + smallDir + ": " + missing + " is missing, so mixtune cannot check"
                    + " that the models share one tokenizer; copy the model's own tokenizer.json there");
        }
        if (Files.isRegularFile(largeTokenizer)) {
            String difference = vocabularyDifference(largeTokenizer, smallTokenizer);
            if (difference != null) {
                throw new UsageException(option + " " + smallDir + ": its tokenizer differs from --model " + largeDir
                        + "'s: " + difference + "; proxy-tuning needs one tokenizer (the same token-to-id map)");
            }
        }
    }

    /** The first token whose id differs between two tokenizer.json files, in words, or null when the maps are equal. */
    static String vocabularyDifference(Path first, Path second) {
        Map<String, Long> a = TextTokenizer.vocabulary(read(first), first.toString());
        Map<String, Long> b = TextTokenizer.vocabulary(read(second), second.toString());
        for (Map.Entry<String, Long> entry : a.entrySet()) {
            Long other = b.get(entry.getKey());
            if (!Objects.equals(entry.getValue(), other)) {
                return "token \"" + entry.getKey() + "\" is id " + entry.getValue() + " in " + first
                        + (other == null ? " but absent from " + second : " but id " + other + " in " + second);
            }
        }
        for (Map.Entry<String, Long> entry : b.entrySet()) {
            if (!a.containsKey(entry.getKey())) {
                return "token \"" + entry.getKey() + "\" is id " + entry.getValue() + " in " + second
                        + " but absent from " + first;
            }
        }
        return null;
    }

    /** Loads the small models beside the large one (on its manager's device); {@link #check} ran before. */
    static ProxyModels load(CommandLine line, CausalLm large, NDManager manager) {
        MistralCheckpoint.LinearFactory linears = ModelLoading.linearFactory(line.getOptionValue("proxy-quantize",
                line.getOptionValue("quantize")));
        Path baseDir = directory(line, "proxy-base");
        List<CausalLm> loaded = new ArrayList<>();
        try {
            CausalLm base = MistralCheckpoint.load(baseDir, manager, linears);
            loaded.add(base);
            CausalLm tuned;
            String description;
            if (line.hasOption("proxy-tuned")) {
                Path tunedDir = directory(line, "proxy-tuned");
                tuned = MistralCheckpoint.load(tunedDir, manager, linears);
                loaded.add(tuned);
                description = "base " + baseDir + ", tuned " + tunedDir;
            } else {
                Path adapterDir = Path.of(line.getOptionValue("proxy-adapter"));
                tuned = MistralCheckpoint.load(baseDir, manager, linears);
                loaded.add(tuned);
                try {
                    PeftAdapter.load(new LoraModel(tuned), adapterDir, "default");
                } catch (IllegalArgumentException e) {
                    throw new UsageException("--proxy-adapter " + adapterDir + ": it does not fit --proxy-base "
                            + baseDir + " (an adapter for another base model?): " + e.getMessage());
                }
                description = "base " + baseDir + ", tuned = base + adapter " + adapterDir;
            }
            double alpha = Mixtune.doubleOption(line, "proxy-alpha", 1.0);
            ProxyTuning tuning = new ProxyTuning(large, base, tuned, alpha);
            return new ProxyModels(loaded, tuning, description + ", alpha " + alpha);
        } catch (RuntimeException e) {
            loaded.forEach(CausalLm::close);
            throw e;
        }
    }

    ProxyTuning tuning() {
        return tuning;
    }

    /** "base DIR, tuned DIR, alpha A", for the command's report. */
    String description() {
        return description;
    }

    /** The most positions all three models take. */
    int maxPositionEmbeddings() {
        return Math.min(tuning.large().config().maxPositionEmbeddings(), Math.min(
                tuning.smallBase().config().maxPositionEmbeddings(),
                tuning.smallTuned().config().maxPositionEmbeddings()));
    }

    private static Path directory(CommandLine line, String option) {
        Path dir = Path.of(line.getOptionValue(option));
        if (!Files.isRegularFile(dir.resolve("config.json"))) {
            throw new UsageException("--" + option + " " + dir + ": no Hugging Face checkpoint there (config.json"
                    + " missing)");
        }
        return dir;
    }

    private static byte[] read(Path file) {
        try {
            return Files.readAllBytes(file);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file + ": " + e.getMessage(), e);
        }
    }

    @Override
    public void close() {
        loaded.forEach(CausalLm::close);
    }
}
