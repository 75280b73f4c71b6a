package io.mixtune.trainer.cli;

import io.mixtune.merging.gguf.GgmlType;
import io.mixtune.merging.gguf.GgufExport;
import io.mixtune.merging.gguf.GgufFileType;
import io.mixtune.trainer.InputDirectories;
import io.mixtune.trainer.InvalidOptionException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Locale;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/** `mixtune export-gguf`: a model, with a LoRA adapter folded in, as one GGUF file for llama.cpp and Ollama. */
final class ExportGgufCommand implements Command {

    @Override
    public String name() {
        return "export-gguf";
    }

    @Override
    public String summary() {
        return "write a model (with an adapter folded in) as a GGUF file for llama.cpp and Ollama";
    }

    @Override
    public String usage() {
        return "--model DIR [--adapter DIR] --out FILE.gguf [--type f32|f16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_k_m|q5_k_m"
                + "|q6_k|q4_k_s|q5_k_s|q3_k_m|q3_k_s|q3_k_l|q2_k|q2_k_s|iq4_nl|iq4_xs] [--imatrix FILE]"
                + " [--tensor-type NAME=T ...] [--tensor-type-file FILE] [--pure] [--output-tensor-type T]"
                + " [--token-embedding-type T] [--leave-output-tensor] [--threads N] [--name NAME] [--force]";
    }

    @Override
    public Options options() {
        return new Options()
                .addOption(Mixtune.option("model", "DIR", "the base model directory (Mistral or Mixtral)"))
                .addOption(Mixtune.option("adapter", "DIR", "a LoRA adapter (PEFT format) to fold in first, as "
                        + "merge-adapter does"))
                .addOption(Mixtune.option("out", "FILE", "the .gguf file to write (not inside an input)"))
                .addOption(Mixtune.option("type", "TYPE", "type of the matrices: f32, f16 (default), q8_0 or q4_0 "
                        + "(as convert_hf_to_gguf.py writes them), or llama-quantize's q4_1, q5_0, q5_1 or k-quant mix "
                        + "q4_k_m, q5_k_m, q6_k, q4_k_s, q5_k_s, q3_k_m, q3_k_s, q3_k_l, q2_k, q2_k_s (needs --imatrix), "
                        + "iq4_nl or iq4_xs (what llama-quantize makes of the f32 file, with --imatrix where given); "
                        + "norms and the router stay f32"))
                .addOption(Mixtune.option("pure", null, "llama-quantize's --pure: every matrix the type's own "
                        + "(q4_k_m: all Q4_K), no per-tensor rule (llama-quantize types only)"))
                .addOption(Mixtune.option("output-tensor-type", "T", "llama-quantize's --output-tensor-type: "
                        + "output.weight as ggml type T (f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k ... q6_k)"))
                .addOption(Mixtune.option("token-embedding-type", "T", "llama-quantize's --token-embedding-type: "
                        + "token_embd.weight as ggml type T"))
                .addOption(Mixtune.option("leave-output-tensor", null, "llama-quantize's --leave-output-tensor: "
                        + "output.weight not quantized (kept f32)"))
                .addOption(Mixtune.option("imatrix", "FILE", "llama-quantize's --imatrix: an importance matrix from "
                        + "llama-imatrix (GGUF, or the legacy .dat) that weights the quantizers (llama-quantize types)"))
                .addOption(Mixtune.option("tensor-type", "NAME=T", "llama-quantize's --tensor-type, repeatable: "
                        + "tensors whose name the regular expression NAME is found in take ggml type T; the first "
                        + "match wins, --tensor-type-file's entries in their place on the command line"))
                .addOption(Mixtune.option("tensor-type-file", "FILE", "llama-quantize's --tensor-type-file: "
                        + "NAME=T entries separated by white space"))
                .addOption(Mixtune.option("threads", "N", "threads that encode the tensors (default: the available "
                        + "processors, as llama-quantize's nthread); the file is the same for any N"))
                .addOption(Mixtune.option("name", "NAME", "general.name (default: the model folder's name, titled)"))
                .addOption(Mixtune.option("force", null, "replace an existing --out"))
                .addOption(Mixtune.option("keep-split", null, "llama-quantize's; refused: export-gguf writes one file"))
                .addOption(Mixtune.option("prune-layers", "IDS", "llama-quantize's; refused (not written yet)"))
                .addOption(Mixtune.option("override-kv", "KEY=TYPE:VALUE", "llama-quantize's; refused (not written "
                        + "yet)"))
                .addOption(Mixtune.option("allow-requantize", null, "llama-quantize's; refused: the input is never "
                        + "quantized"))
                .addOption(Mixtune.option("include-weights", "NAME", "llama-quantize's; refused (not written yet)"))
                .addOption(Mixtune.option("exclude-weights", "NAME", "llama-quantize's; refused (not written yet)"))
                .addOption(Mixtune.option("dry-run", null, "llama-quantize's; refused (not written yet)"));
    }

    /** llama-quantize's options export-gguf does not take, and why (named rather than "Unrecognized option"). */
    private static final java.util.Map<String, String> REFUSED = java.util.Map.of(
            "keep-split", "export-gguf writes one file from one checkpoint, so there is no input split to keep",
            "prune-layers", "pruning layers is not written yet; remove them from the checkpoint (merge with slices)",
            "override-kv", "overriding metadata is not written yet; edit the file with gguf-py's gguf_set_metadata.py",
            "allow-requantize", "export-gguf quantizes the full-precision checkpoint, never a quantized tensor",
            "include-weights", "filtering the imatrix's entries is not written yet",
            "exclude-weights", "filtering the imatrix's entries is not written yet",
            "dry-run", "a dry run is not written yet");
    /** The most --threads taken: beyond it a pool only costs memory (llama-quantize has no bound). */
    static final int MAX_THREADS = 4096;

    @Override
    public int run(CommandLine line, PrintStream out) {
        for (org.apache.commons.cli.Option given : line.getOptions()) {
            String why = REFUSED.get(given.getLongOpt());
            if (why != null) {
                throw new InvalidOptionException(null, "--" + given.getLongOpt() + " is llama-quantize's, which "
                        + "export-gguf does not take: " + why);
            }
        }
        Path model = Path.of(Mixtune.requiredOption(line, "model"));
        Path target = Path.of(Mixtune.requiredOption(line, "out"));
        InputDirectories.requireModel("model", model);
        GgufExport export = GgufExport.of(model, target).force(line.hasOption("force"));
        Path adapter = null;
        if (line.hasOption("adapter")) {
            adapter = Path.of(line.getOptionValue("adapter"));
            InputDirectories.requireAdapter("adapter", adapter);
            export.adapter(adapter);
        }
        GgufExport.Result result;
        try {
            if (line.hasOption("type")) {
                export.type(GgufFileType.parse(line.getOptionValue("type")));
            }
            if (line.hasOption("name")) {
                export.name(line.getOptionValue("name"));
            }
            export.pure(line.hasOption("pure")).leaveOutputTensor(line.hasOption("leave-output-tensor"));
            if (line.hasOption("output-tensor-type")) {
                export.outputTensorType(GgmlType.parse("--output-tensor-type",
                        line.getOptionValue("output-tensor-type")));
            }
            if (line.hasOption("token-embedding-type")) {
                export.tokenEmbeddingType(GgmlType.parse("--token-embedding-type",
                        line.getOptionValue("token-embedding-type")));
            }
            if (line.hasOption("threads")) {
                int threads = Mixtune.intOption(line, "threads", 1);
                if (threads > MAX_THREADS) {
                    throw new IllegalArgumentException("--threads " + threads + " is over " + MAX_THREADS
                            + "; expected a count of encoding threads from 1 to " + MAX_THREADS);
                }
                export.threads(threads);
            }
            export.tensorTypes(tensorTypes(line));
            if (line.hasOption("imatrix")) {
                export.importanceMatrix(line.getOptionValue("imatrix"));
            }
            result = export.run();
        } catch (IllegalArgumentException e) {
            // GgufExport checks its inputs and --out before it writes: what it refuses is the user's to fix
            throw new InvalidOptionException(null, e.getMessage(), e);
        }
        out.printf(Locale.ROOT, "wrote %s%s as %s: %d tensors, %,d bytes, to %s%n", result.model(),
                adapter == null ? "" : " with " + adapter + " folded in", result.type().cliName(),
                result.tensors().size(), result.bytes(), result.out());
        return Mixtune.OK;
    }

    /**
     * --tensor-type values and --tensor-type-file entries (white-space separated, as the file's {@code >>} reads
     * them) in command-line order, which is the order llama-quantize tries them in.
     */
    private static java.util.List<String> tensorTypes(CommandLine line) {
        java.util.List<String> assignments = new java.util.ArrayList<>();
        for (org.apache.commons.cli.Option given : line.getOptions()) {
            if ("tensor-type".equals(given.getLongOpt())) {
                assignments.add(given.getValue());
            } else if ("tensor-type-file".equals(given.getLongOpt())) {
                Path file = Path.of(given.getValue());
                try {
                    for (String entry : java.nio.file.Files.readString(file).split("\\s+")) {
                        if (!entry.isEmpty()) {
                            assignments.add(entry);
                        }
                    }
                } catch (java.io.IOException e) {
                    throw new IllegalArgumentException("--tensor-type-file " + file + " cannot be read: " + e);
                }
            }
        }
        return assignments;
    }
}
