package io.mixtune.trainer.cli;

import io.mixtune.merging.MoeConfig;
import io.mixtune.merging.MoeMerge;
import io.mixtune.merging.MoeYaml;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.trainer.InvalidOptionException;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Option;
import org.apache.commons.cli.Options;

/**
 * `mixtune merge-moe CONFIG.yml OUT_DIR`: mergekit-moe's command (mergekit/scripts/moe.py) on its YAML as it is, a
 * Mixtral built from Mistral fine-tunes ({@link MoeMerge}). mergekit-moe's options that mean something here are taken;
 * the others are refused by name with what to do.
 */
final class MergeMoeCommand implements Command {
    private static final String ALL_SAME = MoeMerge.ALL_SAME_FLAG.substring(2);

    /** mergekit-moe's options (moe.py and options.py MergeOptions) that mixtune does not take: why, what instead. */
    private static final Map<String, String> REFUSED = new LinkedHashMap<>();

    static {
        String quantised = "mixtune runs the base in float32 for gate_mode hidden (mergekit: bfloat16, or 4/8-bit with"
                + " this flag); leave it out, and use --device gpu or gate_mode cheap_embed where memory is short";
        REFUSED.put("load-in-4bit", quantised);
        REFUSED.put("load-in-8bit", quantised);
        REFUSED.put("cuda", "say --device gpu");
        REFUSED.put("trust-remote-code", "mixtune reads Mistral checkpoints only and runs no model code");
        REFUSED.put("no-copy-tokenizer", "the mixture always carries base_model's tokenizer files; delete them"
                + " afterwards if unwanted");
        REFUSED.put("lora-merge-cache", "model+lora sources are folded in while reading, nothing is cached");
        REFUSED.put("lora-merge-dtype", "model+lora sources are folded in float32, then written in dtype");
        REFUSED.put("allow-crimes", "mergekit-moe does not read it; leave it out");
        REFUSED.put("clone-tensors", "every tensor is written from its own copy already; leave it out");
        REFUSED.put("lazy-unpickle", "mixtune reads safetensors only (lazily); leave it out");
        REFUSED.put("no-safe-serialization", "mixtune writes safetensors only");
    }

    @Override
    public String name() {
        return "merge-moe";
    }

    @Override
    public String summary() {
        return "a Mixtral (sparse mixture of experts) from Mistral fine-tunes or adapters: mergekit-moe's YAML"
                + " (gate_mode hidden, cheap_embed, random, uniform_random)";
    }

    @Override
    public String usage() {
        return "CONFIG.yml OUT_DIR [--random-seed N] [--" + ALL_SAME + "] [--device D] [--out-shard-size SIZE]"
                + " [--force]";
    }

    @Override
    public List<String> arguments() {
        return List.of("CONFIG", "OUT_DIR");
    }

    @Override
    public Options options() {
        Options options = new Options()
                .addOption(Mixtune.option("random-seed", "N", "seeds gate_mode random and uniform_random and"
                        + " noise_scale (default 0; mixtune's generator, not torch's: the same seed gives other"
                        + " values than mergekit's)"))
                .addOption(Mixtune.option(ALL_SAME, null, "build a mixture whose experts are all one model (to train"
                        + " it afterwards)"))
                .addOption(Mixtune.deviceOption())
                .addOption(Mixtune.option("out-shard-size", "SIZE", "largest safetensors shard, as 5B, 500M, 1K or"
                        + " bytes (default 5B, mergekit's)"))
                .addOption(Mixtune.option("force", null, "replace a non-empty OUT_DIR"));
        for (Map.Entry<String, String> refused : REFUSED.entrySet()) {
            boolean takesValue = refused.getKey().startsWith("lora-merge");
            options.addOption(Option.builder().longOpt(refused.getKey()).hasArg(takesValue).desc("mergekit-moe's;"
                    + " refused: " + refused.getValue()).build());
        }
        return options;
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
        for (Map.Entry<String, String> refused : REFUSED.entrySet()) {
            if (line.hasOption(refused.getKey())) {
                throw new UsageException("--" + refused.getKey() + " is mergekit-moe's and not taken: "
                        + refused.getValue());
            }
        }
        Path file = Path.of(line.getArgList().get(0));
        Path target = Path.of(line.getArgList().get(1));
        long seed = 0;
        if (line.hasOption("random-seed")) {
            try {
                seed = Long.parseLong(line.getOptionValue("random-seed").trim());
            } catch (NumberFormatException e) {
                throw new UsageException("--random-seed expects an integer, got '" + line.getOptionValue("random-seed")
                        + "'");
            }
        }
        long shard = line.hasOption("out-shard-size") ? size(line.getOptionValue("out-shard-size"))
                : RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES;
        MoeMerge.Report report;
        try {
            MoeConfig config = MoeYaml.read(file);
            String text = Files.readString(file);
            report = MoeMerge.run(config, text, target, new MoeMerge.Options(line.hasOption("force"), seed,
                    line.hasOption(ALL_SAME), Mixtune.device(line), shard));
        } catch (IllegalArgumentException e) {
            // MoeYaml and MoeMerge check every input before anything is written: the user's to fix
            throw new InvalidOptionException(null, e.getMessage(), e);
        } catch (IOException e) {
            throw new InvalidOptionException(null, file + ": cannot be read: " + e.getMessage(), e);
        }
        report.lines().forEach(out::println);
        return Mixtune.OK;
    }

    /** mergekit's parse_kmb: an integer, or one with a K, M or B suffix (thousands, millions, billions). */
    static long size(String value) {
        String v = value.trim().toUpperCase(Locale.ROOT);
        long unit = v.endsWith("K") ? 1_000L : v.endsWith("M") ? 1_000_000L : v.endsWith("B") ? 1_000_000_000L : 1;
        try {
            long n = Long.parseLong(unit == 1 ? v : v.substring(0, v.length() - 1));
            if (n <= 0) {
                throw new NumberFormatException();
            }
            return n * unit;
        } catch (NumberFormatException e) {
            throw new UsageException("--out-shard-size expects a positive size as 5B, 500M, 1K or bytes, got '"
                    + value + "'");
        }
    }
}
