package io.mixtune.merging.gguf;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.lora.adapter.AdapterMerge;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.AttentionMask;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.DenseLinear;
import io.mixtune.model.nn.Linear;
import io.mixtune.model.nn.WithoutGrad;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * llama.cpp's llama-imatrix (tools/imatrix/imatrix.cpp) on mixtune's own forward: the importance matrix of the
 * tensors export-gguf writes (the checkpoint, an adapter folded in as export-gguf folds it), from a calibration text.
 *
 * <p>As compute_imatrix: the text is tokenized whole with the BOS in front (common_tokenize, add_special), the first
 * {@code fromChunk} chunks of {@code ctx} tokens dropped, then each whole chunk (at most {@code chunks}) runs through
 * the model from position 0 with its first token replaced by the BOS. As collect_imatrix: every matrix of a block
 * (attn_q/k/v/output, ffn_gate/up/down, the router ffn_gate_inp) and, with {@code processOutput}, an untied
 * output.weight collects its input rows' squares and row count, the stacked experts per expert (mul_mat_id). llama.cpp
 * skips a dense matmul over a micro-batch of fewer than 16 tokens; the same micro-batches are cut here
 * ({@link #schedule}). The perplexity is computed over each chunk's second half,
 * as llama-imatrix prints it.
 */
public final class ImatrixRun {
    /** collect_imatrix: "why are small batches ignored (<16 tokens)?" */
    static final int SMALLEST_COLLECTED_BATCH = 16;
    private static final Pattern LAYER_MODULE = Pattern.compile("model\\.layers\\.(\\d+)\\.(.+)");
    private static final Pattern EXPERT_MODULE = Pattern.compile("block_sparse_moe\\.experts\\.(\\d+)\\.(w1|w2|w3)");

    /**
     * llama-imatrix's options that apply.
     *
     * @param ctx -c: tokens per chunk
     * @param batch -b: logical batch (default 2048)
     * @param ubatch -ub: physical batch (default 512)
     * @param chunks --chunks: most chunks, -1 all
     * @param fromChunk --chunk: chunks skipped first
     * @param outputFrequency -ofreq: the output is written every N chunks (default 10)
     * @param saveFrequency --save-frequency: a copy {@code out.at_N} every N chunks, 0 none
     */
    public record Options(int ctx, int batch, int ubatch, int chunks, int fromChunk, boolean processOutput,
            boolean perplexity, boolean parseSpecial, boolean legacyFormat, int outputFrequency, int saveFrequency) {
        public static final Options DEFAULTS = new Options(512, 2048, 512, -1, 0, false, true, false, false, 10, 0);
    }

    /** What a run did: the tokens of the text, the chunks run, the final perplexity (NaN without). */
    public record Result(int tokens, int chunks, double perplexity, ImatrixStats stats) {}

    private ImatrixRun() {}

    /**
     * @param promptFile the -f file as given (written into imatrix.datasets as llama-imatrix writes params.prompt_file)
     * @param inFiles --in-file: earlier imatrix files added first
     */
    public static Result run(Path model, Path adapter, String promptFile, List<Path> inFiles, Path out,
            Options options, PrintStream log) {
        if (options.ctx() <= 0) {
            throw new IllegalArgumentException("-c " + options.ctx() + ": llama-imatrix requires '--ctx-size' > 0");
        }
        if (options.batch() < 1 || options.ubatch() < 1 || options.outputFrequency() < 1
                || options.saveFrequency() < 0 || options.fromChunk() < 0) {
            throw new IllegalArgumentException("-b, -ub and --output-frequency expect counts of 1 or more, --chunk"
                    + " and --save-frequency 0 or more");
        }
        // main(): n_seq chunks per batch, and -b at most their tokens (so n_batch < n_ctx || n_batch % n_ctx == 0)
        int seqs = Math.max(1, options.batch() / options.ctx());
        int batch = Math.min(options.batch(), seqs * options.ctx());
        ImatrixStats stats = new ImatrixStats(options.ctx());
        for (Path inFile : inFiles) {
            stats.load(inFile);
        }
        if (promptFile == null) {
            if (inFiles.isEmpty()) {
                throw new IllegalArgumentException("no -f and no --in-file: nothing to compute or combine");
            }
            log.println("no prompt provided; combining precomputed matrices only");
            save(stats, out, null, options, -1);
            return new Result(0, 0, Double.NaN, stats);
        }
        String text;
        try {
            text = Files.readString(Path.of(promptFile));
        } catch (IOException e) {
            throw new IllegalArgumentException("-f " + promptFile + " cannot be read: " + e.getMessage(), e);
        }
        if (text.endsWith("\n")) {
            text = text.substring(0, text.length() - 1); // arg.cpp's -f drops one trailing newline
        }
        ModelConfig config = ModelConfig.read(model.resolve("config.json"));
        long[] tokens = tokenize(model, adapter, config, text, options.parseSpecial());
        int ctx = options.ctx();
        int from = options.fromChunk() * ctx;
        if (options.fromChunk() > 0 && (long) (options.fromChunk() + 2) * ctx >= tokens.length) {
            throw new IllegalArgumentException("--chunk " + options.fromChunk() + ": there will be not enough tokens"
                    + " left after removing " + options.fromChunk() + " chunks (" + tokens.length + " tokens)");
        }
        int left = tokens.length - from;
        if (left < 2 * ctx) {
            throw new IllegalArgumentException("-f " + promptFile + " tokenizes to only " + left + " tokens; -c "
                    + ctx + " needs at least " + 2 * ctx + " (llama-imatrix's limit)");
        }
        int chunkMax = left / ctx;
        int chunks = options.chunks() < 0 ? chunkMax : Math.min(options.chunks(), chunkMax);
        log.printf(Locale.ROOT, "computing over %d chunks, n_ctx=%d, batch_size=%d, n_seq=%d%n", chunks, ctx, batch,
                seqs);
        Long bos = addsBos(model, adapter, config) ? (long) config.bosTokenId() : null;
        double nll = 0;
        double nll2 = 0;
        int count = 0;
        try (NDManager manager = NDManager.newBaseManager(Device.cpu());
                AdapterMerge.Merged merged = adapter == null ? null : AdapterMerge.Merged.open(model, adapter);
                CausalLm lm = MistralCheckpoint.load(model, manager, linears(merged), DataType.FLOAT32)) {
            Collector collector = new Collector(stats, config, options.processOutput());
            lm.replaceLinears(collector::wrap);
            int lastChunk = stats.chunkCount();
            long denseRows = stats.largestCount();
            for (int first = 0; first < chunks; first += seqs) {
                // compute_imatrix decodes n_seq chunks at a time; llama_decode cuts them into micro-batches
                Schedule schedule = schedule(ctx, batch, Math.min(options.ubatch(), batch), seqs,
                        Math.min(seqs, chunks - first));
                for (int i = first; i < first + schedule.counted().length; i++) {
                    boolean[] counted = schedule.counted()[i - first];
                    int start = from + i * ctx;
                    long[] ids = java.util.Arrays.copyOfRange(tokens, start, start + ctx);
                    if (bos != null) {
                        ids[0] = bos;
                    }
                    float[] logits;
                    try (NDManager step = manager.newSubManager()) {
                        collector.counted = counted;
                        collector.rowMask = step.create(toFloats(counted), new Shape(ctx, 1));
                        logits = WithoutGrad.get(() -> {
                            NDArray input = step.create(ids, new Shape(1, ctx));
                            NDArray positions = step.arange(0, ctx, 1, DataType.INT64).reshape(1, ctx);
                            NDArray mask = AttentionMask.forRows(step, 1, ctx, null, null, config.slidingWindow(),
                                    lm.computeType());
                            return lm.logits(lm.hiddenStates(input, positions, mask, null).states()).toFloatArray();
                        });
                    }
                    if (options.perplexity()) {
                        // process_logits over the second half: logits at first .. ctx-2 predict the next (original)
                        // token
                        int vocab = logits.length / ctx;
                        for (int p = ctx / 2; p < ctx - 1; p++) {
                            double value = -logSoftmax(logits, p * vocab, vocab, (int) tokens[start + p + 1]);
                            nll += value;
                            nll2 += value * value;
                        }
                        count += ctx - ctx / 2 - 1;
                        log.printf(Locale.ROOT, "[%d]%.4f,", i + 1, Math.exp(nll / count));
                        log.flush();
                    }
                }
                // collect_imatrix's chunk counter (the most rows of a matrix / chunk size) steps per micro-batch, as
                // the dense matrices count its tokens: its tests run here once the batch is done, over the same steps
                for (int size : schedule.microBatchTokens()) {
                    if (size >= SMALLEST_COLLECTED_BATCH) {
                        denseRows += size;
                        lastChunk = saveIfDue(stats, out, promptFile, options, lastChunk, (int) (denseRows / ctx));
                    }
                }
                // no dense matrix counted (micro-batches under 16): the experts' rows move it
                lastChunk = saveIfDue(stats, out, promptFile, options, lastChunk, stats.chunkCount());
            }
        }
        log.println();
        double perplexity = Double.NaN;
        if (options.perplexity()) {
            nll2 /= count;
            nll /= count;
            perplexity = Math.exp(nll);
            nll2 -= nll * nll;
            if (nll2 > 0) {
                log.printf(Locale.ROOT, "Final estimate: PPL = %.4f +/- %.5f%n", perplexity,
                        Math.sqrt(nll2 / (count - 1)) * perplexity);
            } else {
                log.println("Unexpected negative standard deviation of log(prob)");
            }
        }
        save(stats, out, promptFile, options, -1);
        return new Result(tokens.length, chunks, perplexity, stats);
    }

    /**
     * collect_imatrix's test when its chunk counter rises to {@code chunk}: the output every -ofreq chunks, a copy
     * {@code out.at_<chunk>} every --save-frequency chunks (where the counter steps over a multiple, too).
     * llama-imatrix writes them from inside the forward, with the batch partly collected; they hold the whole batch
     * here.
     */
    private static int saveIfDue(ImatrixStats stats, Path out, String promptFile, Options options, int lastChunk,
            int chunk) {
        if (chunk <= lastChunk) {
            return lastChunk;
        }
        int step = chunk - lastChunk;
        if ((chunk % options.outputFrequency()) / step == 0) {
            save(stats, out, promptFile, options, -1);
        }
        if (options.saveFrequency() > 0 && (chunk % options.saveFrequency()) / step == 0) {
            save(stats, out, promptFile, options, chunk);
        }
        return chunk;
    }

    /** save_imatrix / save_imatrix_legacy; {@code chunk} > 0 writes the copy {@code out.at_<chunk>}. */
    private static void save(ImatrixStats stats, Path out, String promptFile, ImatrixRun.Options options, int chunk) {
        Path file = chunk > 0 ? out.resolveSibling(out.getFileName() + ".at_" + chunk) : out;
        if (options.legacyFormat()) {
            stats.writeLegacy(file, promptFile);
        } else {
            stats.writeGguf(file, promptFile);
        }
    }

    /**
     * One batch of compute_imatrix: per chunk, which positions a dense matrix collects (their micro-batch has 16
     * tokens or more: collect_imatrix declines a dense matmul over fewer), and each micro-batch's tokens in order.
     */
    record Schedule(boolean[][] counted, int[] microBatchTokens) {}

    /**
     * How llama_decode cuts a batch of {@code group} chunks of {@code ctx} tokens into micro-batches of at most
     * {@code ubatch}. One chunk per batch (n_seq 1): batches of -b tokens, each cut in order (split_simple). Several
     * (n_seq > 1): llama-imatrix's KV cache keeps a stream per sequence (n_parallel = n_seq, not unified), so
     * llama_kv_cache::init_batch uses split_equal(n_ubatch, sequential): the run of consecutive chunks with tokens
     * left (at most n_ubatch + 1), the same max(1, n_ubatch / chunks) next tokens from each. E.g. -c 24 -b 48 -ub 20:
     * 10 + 10, 10 + 10, then 4 + 4, whose 8 rows are not collected.
     */
    static Schedule schedule(int ctx, int batch, int ubatch, int seqs, int group) {
        boolean[][] counted = new boolean[group][ctx];
        List<Integer> tokens = new ArrayList<>();
        if (seqs == 1) {
            for (int b = 0; b < ctx; b += batch) {
                int batchEnd = Math.min(ctx, b + batch);
                for (int u = b; u < batchEnd; u += ubatch) {
                    int end = Math.min(batchEnd, u + ubatch);
                    java.util.Arrays.fill(counted[0], u, end, end - u >= SMALLEST_COLLECTED_BATCH);
                    tokens.add(end - u);
                }
            }
        } else {
            int[] next = new int[group];
            while (true) {
                int first = 0;
                while (first < group && next[first] == ctx) {
                    first++;
                }
                if (first == group) {
                    break;
                }
                int end = first;
                int left = ctx;
                while (end < group && next[end] < ctx && end - first <= ubatch) {
                    left = Math.min(left, ctx - next[end]);
                    end++;
                }
                int length = Math.min(left, Math.max(1, ubatch / (end - first)));
                int size = length * (end - first);
                for (int s = first; s < end; s++) {
                    java.util.Arrays.fill(counted[s], next[s], next[s] + length, size >= SMALLEST_COLLECTED_BATCH);
                    next[s] += length;
                }
                tokens.add(size);
            }
        }
        return new Schedule(counted, tokens.stream().mapToInt(Integer::intValue).toArray());
    }

    private static float[] toFloats(boolean[] values) {
        float[] floats = new float[values.length];
        for (int i = 0; i < values.length; i++) {
            floats[i] = values[i] ? 1 : 0;
        }
        return floats;
    }

    /** imatrix.cpp's log_softmax: max in float, the sum of expf in double. */
    static double logSoftmax(float[] logits, int from, int vocab, int token) {
        float max = logits[from];
        for (int i = 1; i < vocab; i++) {
            max = Math.max(max, logits[from + i]);
        }
        double sum = 0;
        for (int i = 0; i < vocab; i++) {
            sum += (float) Math.exp(logits[from + i] - max);
        }
        return logits[from + token] - max - Math.log(sum);
    }

    /** The merged weights export-gguf writes: base W + scale B A where the adapter has a delta. */
    private static MistralCheckpoint.LinearFactory linears(AdapterMerge.Merged merged) {
        if (merged == null) {
            return MistralCheckpoint.DENSE;
        }
        return (name, weight, shape, manager) -> {
            String tensor = name + ".weight";
            if (!merged.base().contains(tensor)) {
                throw new IllegalArgumentException("--adapter with a checkpoint whose experts are fused ("
                        + tensor + " is not a tensor of it) is not written yet; merge-adapter first and give the"
                        + " merged model");
            }
            return new DenseLinear(manager.create(merged.read(tensor), shape));
        };
    }

    /** The tokenizer export-gguf takes (the adapter's folder first), as llama.cpp tokenizes with its vocabulary. */
    private static long[] tokenize(Path model, Path adapter, ModelConfig config, String text, boolean parseSpecial) {
        Path dir = tokenizerDir(model, adapter, "tokenizer.json");
        if (dir == null) {
            throw new IllegalArgumentException(model + " has no tokenizer.json; imatrix tokenizes the text with it");
        }
        long bos = config.bosTokenId() == null ? TextTokenizer.NO_BOS : config.bosTokenId();
        try (TextTokenizer tokenizer = TextTokenizer.open(dir.resolve("tokenizer.json"), bos, config.eosTokenId())) {
            String marked = parseSpecial ? tokenizer.control(text) : text;
            return tokenizer.encode(marked, addsBos(model, adapter, config));
        }
    }

    /**
     * llama_vocab_get_add_bos of the exported file: tokenizer_config.json's add_bos_token where it is a boolean
     * (export-gguf writes it as tokenizer.ggml.add_bos_token), else true for a model with a BOS (llama.cpp's SPM
     * default).
     */
    static boolean addsBos(Path model, Path adapter, ModelConfig config) {
        if (config.bosTokenId() == null) {
            return false;
        }
        Path dir = tokenizerDir(model, adapter, "tokenizer_config.json");
        if (dir != null) {
            try {
                JsonNode add = new ObjectMapper().readTree(dir.resolve("tokenizer_config.json").toFile())
                        .get("add_bos_token");
                if (add != null && add.isBoolean()) {
                    return add.asBoolean();
                }
            } catch (IOException e) {
                throw new IllegalArgumentException(dir.resolve("tokenizer_config.json") + " cannot be read: "
                        + e.getMessage(), e);
            }
        }
        return true;
    }

    private static Path tokenizerDir(Path model, Path adapter, String file) {
        Map<String, Path> sources = AdapterMerge.tokenizerSources(adapter == null ? List.of(model)
                : List.of(adapter, model));
        return sources.get(file);
    }

    /**
     * Wraps each linear layer so that its input rows' squares go to the stats under llama.cpp's tensor name (the
     * names export-gguf writes: {@link GgufExport#LAYER_NAMES}, {@link GgufExport#EXPERT_NAMES}).
     */
    private static final class Collector {
        private final ImatrixStats stats;
        private final int experts;
        private final boolean processOutput;
        boolean[] counted;
        NDArray rowMask;

        Collector(ImatrixStats stats, ModelConfig config, boolean processOutput) {
            this.stats = stats;
            this.experts = config.isMixtureOfExperts() ? config.numLocalExperts() : 0;
            this.processOutput = processOutput;
        }

        Linear wrap(String module, Linear inner) {
            if (module.equals("lm_head")) {
                // an untied head is output.weight; a tied one is token_embd.weight, which collect_imatrix never takes
                return processOutput ? recording(inner, "output.weight", -1) : inner;
            }
            Matcher layer = LAYER_MODULE.matcher(module);
            if (!layer.matches()) {
                return inner;
            }
            String block = layer.group(1);
            Matcher expert = EXPERT_MODULE.matcher(layer.group(2));
            if (expert.matches()) {
                return recording(inner, "blk." + block + "." + GgufExport.EXPERT_NAMES.get(expert.group(2))
                        + ".weight", Integer.parseInt(expert.group(1)));
            }
            String mapped = GgufExport.LAYER_NAMES.get(layer.group(2));
            return mapped == null ? inner : recording(inner, "blk." + block + "." + mapped + ".weight", -1);
        }

        private Linear recording(Linear inner, String name, int expert) {
            return new Linear() {
                @Override
                public NDArray forward(NDArray x) {
                    long columns = x.getShape().get(x.getShape().dimension() - 1);
                    NDArray rows = x.reshape(-1, columns);
                    if (expert >= 0) {
                        // mul_mat_id: every row routed to the expert counts, whatever the batch size
                        stats.addExpert(name, expert, experts, rows.square().sum(new int[] {0}).toFloatArray(),
                                rows.getShape().get(0));
                    } else {
                        long kept = 0;
                        for (boolean c : counted) {
                            kept += c ? 1 : 0;
                        }
                        if (kept > 0) {
                            stats.addDense(name, rows.square().mul(rowMask).sum(new int[] {0}).toFloatArray(), kept);
                        }
                    }
                    return inner.forward(x);
                }

                @Override
                public long inFeatures() {
                    return inner.inFeatures();
                }

                @Override
                public long outFeatures() {
                    return inner.outFeatures();
                }
            };
        }
    }
}
