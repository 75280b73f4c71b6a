package io.mixtune.trainer.cli;

import io.mixtune.merging.gguf.ImatrixRun;
import io.mixtune.trainer.InputDirectories;
import io.mixtune.trainer.InvalidOptionException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Option;
import org.apache.commons.cli.Options;

/** `mixtune imatrix`: llama.cpp's llama-imatrix on mixtune's forward, for export-gguf --imatrix and llama-quantize. */
final class ImatrixCommand implements Command {

    @Override
    public String name() {
        return "imatrix";
    }

    @Override
    public String summary() {
        return "an importance matrix from calibration text, as llama-imatrix writes it (for export-gguf --imatrix)";
    }

    @Override
    public String usage() {
        return "--model DIR [--adapter DIR] -f TEXT [-o imatrix.gguf] [--output-format gguf|dat] [-c N] [-b N]"
                + " [-ub N] [--chunks N] [--chunk N] [--process-output] [--no-ppl] [--parse-special]"
                + " [--output-frequency N] [--save-frequency N] [--in-file FILE ...]";
    }

    private static Option option(String shortName, String longName, String argName, String description) {
        return Option.builder(shortName).longOpt(longName).hasArg(argName != null).argName(argName)
                .desc(description).build();
    }

    @Override
    public Options options() {
        return new Options()
                .addOption(Mixtune.option("model", "DIR", "the base model directory (Mistral or Mixtral), as "
                        + "export-gguf takes it"))
                .addOption(Mixtune.option("adapter", "DIR", "a LoRA adapter (PEFT format) folded in first, as "
                        + "export-gguf --adapter does"))
                .addOption(option("f", "file", "FILE", "the calibration text (one trailing newline dropped, as "
                        + "llama-imatrix reads it)"))
                .addOption(option("o", "output", "FILE", "the imatrix file to write (default imatrix.gguf)"))
                .addOption(Mixtune.option("output-format", "F", "gguf (default) or dat (the legacy format)"))
                .addOption(option("c", "ctx-size", "N", "tokens per chunk (default 512)"))
                .addOption(option("b", "batch-size", "N", "llama-imatrix's logical batch (default 2048): it decides "
                        + "which micro-batches are under 16 tokens, whose dense matmuls llama-imatrix skips"))
                .addOption(option("ub", "ubatch-size", "N", "llama-imatrix's physical batch (default 512)"))
                .addOption(Mixtune.option("chunks", "N", "the most chunks to run (default all)"))
                .addOption(option(null, "chunk", "N", "skip the first N chunks (llama-imatrix's --chunk,"
                        + " --from-chunk)"))
                .addOption(Mixtune.option("from-chunk", "N", "the same as --chunk"))
                .addOption(Mixtune.option("process-output", null, "collect output.weight too (an untied lm_head)"))
                .addOption(Mixtune.option("no-ppl", null, "do not print the perplexity"))
                .addOption(Mixtune.option("ppl", null, "print the perplexity (the default)"))
                .addOption(Mixtune.option("parse-special", null, "read special tokens in the text as special"))
                .addOption(option("ofreq", "output-frequency", "N", "write the output every N chunks (default 10)"))
                .addOption(Mixtune.option("save-frequency", "N", "write a copy OUT.at_N every N chunks (default 0:"
                        + " none)"))
                .addOption(Mixtune.option("in-file", "FILE", "an earlier imatrix (GGUF or .dat) to add in, "
                        + "repeatable or a comma-separated list; without -f the files are only combined"))
                .addOption(Mixtune.option("show-statistics", null, "llama-imatrix's; refused (not written yet)"))
                .addOption(option("m", null, "FILE", "llama-imatrix's GGUF model; refused: give --model DIR"));
    }

    /** llama-imatrix's options imatrix does not take, and why (named rather than "Unrecognized option"). */
    private static final Map<String, String> REFUSED = Map.of(
            "show-statistics", "the statistics table is not written yet; run llama-imatrix --show-statistics on the"
                    + " file",
            "m", "mixtune imatrix runs the Hugging Face checkpoint export-gguf converts: give its folder as --model"
                    + " DIR (and --adapter DIR)");

    /**
     * arg.cpp's parse_csv_row, how llama-imatrix splits an --in-file value: fields at commas, a field that starts
     * with a double quote runs to the closing one (commas kept, "" a quote).
     */
    static List<String> csvRow(String input) {
        List<String> fields = new ArrayList<>();
        StringBuilder field = new StringBuilder();
        boolean quoted = false;
        for (int i = 0; i < input.length(); i++) {
            char ch = input.charAt(i);
            if (ch == '"' && !quoted && field.length() == 0) {
                quoted = true;
            } else if (ch == '"' && quoted && i + 1 < input.length() && input.charAt(i + 1) == '"') {
                field.append('"');
                i++;
            } else if (ch == '"' && quoted) {
                quoted = false;
            } else if (ch == ',' && !quoted) {
                fields.add(field.toString());
                field.setLength(0);
            } else {
                field.append(ch);
            }
        }
        fields.add(field.toString());
        return fields;
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
        for (Option given : line.getOptions()) {
            String key = given.getLongOpt() != null ? given.getLongOpt() : given.getOpt();
            String why = REFUSED.get(key);
            if (why != null) {
                throw new InvalidOptionException(null, (key.length() == 1 ? "-" : "--") + key + " is llama-imatrix's,"
                        + " which mixtune imatrix does not take: " + why);
            }
        }
        Path model = Path.of(Mixtune.requiredOption(line, "model"));
        InputDirectories.requireModel("model", model);
        Path adapter = null;
        if (line.hasOption("adapter")) {
            adapter = Path.of(line.getOptionValue("adapter"));
            InputDirectories.requireAdapter("adapter", adapter);
        }
        String format = line.getOptionValue("output-format", "gguf");
        if (!format.equals("gguf") && !format.equals("dat")) {
            throw new UsageException("--output-format expects gguf or dat, got '" + format + "'");
        }
        if (line.hasOption("ppl") && line.hasOption("no-ppl")) {
            throw new UsageException("--ppl and --no-ppl contradict each other; give one");
        }
        if (line.hasOption("chunk") && line.hasOption("from-chunk")) {
            throw new UsageException("--chunk and --from-chunk are the same option; give one");
        }
        String fromChunk = line.hasOption("chunk") ? "chunk" : "from-chunk";
        ImatrixRun.Options defaults = ImatrixRun.Options.DEFAULTS;
        ImatrixRun.Options options = new ImatrixRun.Options(
                Mixtune.intOption(line, "ctx-size", defaults.ctx()),
                Mixtune.intOption(line, "batch-size", defaults.batch()),
                Mixtune.intOption(line, "ubatch-size", defaults.ubatch()),
                Mixtune.intOption(line, "chunks", defaults.chunks()),
                Mixtune.intOption(line, fromChunk, defaults.fromChunk()),
                line.hasOption("process-output"), !line.hasOption("no-ppl"), line.hasOption("parse-special"),
                format.equals("dat"),
                Mixtune.intOption(line, "output-frequency", defaults.outputFrequency()),
                Mixtune.intOption(line, "save-frequency", defaults.saveFrequency()));
        Path output = Path.of(line.getOptionValue("output", "imatrix.gguf"));
        if (Files.isDirectory(output)) {
            throw new InvalidOptionException(null, "-o " + output + " is a directory; expected the imatrix file to"
                    + " write");
        }
        if (format.equals("gguf") && !output.getFileName().toString().endsWith(".gguf")
                && !line.hasOption("output-format")) {
            System.err.println("saving imatrix using GGUF format with a different suffix than .gguf; if you want the"
                    + " previous imatrix format, use --output-format dat");
        }
        List<Path> inFiles = new ArrayList<>();
        String[] given = line.getOptionValues("in-file");
        if (given != null) {
            for (String list : given) {
                for (String file : csvRow(list)) {
                    inFiles.add(Path.of(file));
                }
            }
        }
        ImatrixRun.Result result;
        try {
            result = ImatrixRun.run(model, adapter, line.getOptionValue("file"), inFiles, output, options, out);
        } catch (IllegalArgumentException e) {
            throw new InvalidOptionException(null, e.getMessage(), e);
        }
        out.printf(Locale.ROOT, "wrote %s: %d entries, %d chunks of %d tokens%n", output,
                result.stats().names().size(), result.stats().chunkCount(), options.ctx());
        return Mixtune.OK;
    }
}
