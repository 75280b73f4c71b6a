package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.merging.gguf.GgufReader;
import io.mixtune.merging.gguf.ImatrixStats;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.PresetCheckpoint;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.IntStream;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * `mixtune imatrix` computes what llama.cpp's llama-imatrix computed on `export-gguf --type f32` of the same seeded
 * tiny checkpoints over the same text (golden/gguf/imatrix/llama-imatrix, interop/make_imatrix_goldens.py): the same
 * entries, counts (per expert for the Mixtral's stacked experts), chunk count, chunk size, datasets and
 * --save-frequency copies exactly, the sums of squared activations within {@link #SUM_TOLERANCE}, and the perplexity
 * it prints within 5e-5 (measured 9e-6). The text tokenizes to the ids llama-tokenize gave.
 */
class ImatrixCommandTest {
    private static final Path DIR = Path.of("src/test/resources/golden/gguf/imatrix/llama-imatrix");
    /**
     * Relative, per value: the forwards differ in summation order, llama.cpp keeps the attention's keys and values in
     * an f16 KV cache (attn_output's inputs carry f16 rounding) and ggml's silu and exp are its own; measured 2.2e-3.
     */
    static final double SUM_TOLERANCE = 1e-2;

    @TempDir
    static Path models;

    static Stream<Integer> cases() throws Exception {
        return IntStream.range(0, golden().path("cases").size()).boxed();
    }

    private static JsonNode golden() throws Exception {
        return new ObjectMapper().readTree(DIR.resolve("cases.json").toFile());
    }

    private static synchronized Path model(String preset) {
        Path model = models.resolve(preset);
        if (!Files.isDirectory(model)) {
            PresetCheckpoint.write(preset, model, 0, DType.F32);
        }
        return model;
    }

    @ParameterizedTest
    @MethodSource("cases")
    void computesWhatLlamaImatrixComputed(int index, @TempDir Path dir) throws Exception {
        JsonNode entry = golden().path("cases").get(index);
        String file = entry.path("file").asText();
        Path out = dir.resolve(file);
        List<String> args = new ArrayList<>(List.of("imatrix", "--model", model(entry.path("preset").asText())
                .toString(), "-f", golden().path("text").asText(), "-o", out.toString()));
        entry.path("options").forEach(option -> args.add(option.asText()));
        MixtuneCliTest.Result result = MixtuneCliTest.run(args.toArray(String[]::new));
        assertEquals(0, result.code(), result.err());

        Matcher ppl = Pattern.compile("Final estimate: PPL = ([0-9.]+)").matcher(result.out());
        assertTrue(ppl.find(), result.out());
        double expected = entry.path("perplexity").asDouble();
        assertEquals(expected, Double.parseDouble(ppl.group(1)), 5e-5 * expected);

        // the --save-frequency copies llama-imatrix wrote: named by its chunk counter, which steps per micro-batch
        List<String> copies = new ArrayList<>();
        entry.path("copies").forEach(copy -> copies.add(copy.asText()));
        try (Stream<Path> written = Files.list(dir)) {
            assertEquals(copies, written.map(p -> p.getFileName().toString()).filter(n -> n.startsWith(file + ".at_"))
                    .map(n -> n.substring(file.length())).sorted().toList());
        }

        int chunkSize = Integer.parseInt(entry.path("options").get(1).asText());
        ImatrixStats reference = new ImatrixStats(chunkSize);
        reference.load(DIR.resolve(file));
        ImatrixStats ours = new ImatrixStats(chunkSize);
        ours.load(out);
        assertEquals(reference.names(), ours.names());
        assertEquals(reference.datasets(), ours.datasets());
        assertEquals(reference.chunkCount(), ours.chunkCount());
        for (String name : reference.names()) {
            assertArrayEquals(reference.counts(name), ours.counts(name), name);
            float[] want = reference.sums(name);
            float[] got = ours.sums(name);
            for (int i = 0; i < want.length; i++) {
                assertEquals(want[i], got[i], SUM_TOLERANCE * Math.abs(want[i]), name + "[" + i + "]");
            }
        }
        if (file.endsWith(".gguf")) {
            GgufReader want = GgufReader.open(DIR.resolve(file));
            GgufReader got = GgufReader.open(out);
            assertEquals(want.metadata().keySet().stream().toList(), got.metadata().keySet().stream().toList());
            for (String key : List.of("general.type", "imatrix.chunk_count", "imatrix.chunk_size",
                    "imatrix.datasets")) {
                assertEquals(want.metadata().get(key), got.metadata().get(key), key);
            }
            assertEquals(want.tensors().keySet().stream().toList(), got.tensors().keySet().stream().toList());
            want.tensors().forEach((name, info) -> assertArrayEquals(info.dimensions(),
                    got.tensors().get(name).dimensions(), name));
            assertEquals(Files.size(DIR.resolve(file)), Files.size(out));
        } else {
            // the legacy file's layout: only the float values differ
            assertEquals(Files.size(DIR.resolve(file)), Files.size(out));
        }
    }

    @Test
    void mixtralExpertsCountTheirOwnRowsAsMulMatIdDoes() throws Exception {
        ImatrixStats reference = new ImatrixStats(32);
        reference.load(DIR.resolve("tiny-mixtral.imatrix.gguf"));
        long[] counts = reference.counts("blk.1.ffn_down_exps.weight");
        assertEquals(4, counts.length);
        // top-2 of 4 experts over 3 chunks of 32 tokens: every token counted twice, unevenly per expert
        assertEquals(2 * 96, java.util.Arrays.stream(counts).sum());
        assertFalse(java.util.Arrays.stream(counts).allMatch(c -> c == counts[0]));
        assertArrayEquals(new long[] {96}, reference.counts("blk.1.ffn_gate_inp.weight"));
    }

    @Test
    void theTextTokenizesToTheIdsLlamaTokenizeGave() throws Exception {
        String text = Files.readString(Path.of(golden().path("text").asText()));
        text = text.substring(0, text.length() - 1); // llama-imatrix's -f drops one trailing newline
        for (String preset : List.of("tiny-mistral", "tiny-mixtral")) {
            try (TextTokenizer tokenizer = TextTokenizer.open(model(preset), 1, 2)) {
                long[] ids = tokenizer.encode(text, true);
                JsonNode want = golden().path(preset.equals("tiny-mistral") ? "tokens" : "tokens_mixtral");
                assertArrayEquals(IntStream.range(0, want.size()).mapToLong(i -> want.get(i).asLong()).toArray(), ids,
                        preset);
            }
        }
    }

    @Test
    void inFilesAddUpAsLlamaImatrixCombinesThem(@TempDir Path dir) throws Exception {
        Path golden = DIR.resolve("tiny-mistral.imatrix.gguf");
        Path legacy = DIR.resolve("tiny-mistral-b30.imatrix.dat");
        Path out = dir.resolve("combined.gguf");
        // --in-file is repeatable and takes a comma-separated list (arg.cpp's parse_csv_row), "a,b" as llama-imatrix
        MixtuneCliTest.Result result = MixtuneCliTest.run("imatrix", "--model", model("tiny-mistral").toString(),
                "--in-file", golden + "," + golden, "--in-file", golden.toString(), "-o", out.toString(), "-c", "32");
        assertEquals(0, result.code(), result.err());
        ImatrixStats once = new ImatrixStats(32);
        once.load(golden);
        ImatrixStats thrice = new ImatrixStats(32);
        thrice.load(out);
        assertEquals(9, thrice.chunkCount());
        assertEquals(List.of(once.datasets().get(0), once.datasets().get(0), once.datasets().get(0)),
                thrice.datasets());
        for (String name : once.names()) {
            assertEquals(3 * once.counts(name)[0], thrice.counts(name)[0], name);
            assertEquals(3 * once.sums(name)[5], thrice.sums(name)[5], 1e-6 * thrice.sums(name)[5], name);
        }
        assertEquals(List.of("a", "b,c", "d\"e", ""), ImatrixCommand.csvRow("a,\"b,c\",\"d\"\"e\","));
        // a legacy file: its values (sums / count * ncall) times the chunk size, ncall times the chunk size
        ImatrixStats fromDat = new ImatrixStats(40);
        fromDat.load(legacy);
        assertArrayEquals(new long[] {2 * 40}, fromDat.counts("blk.0.attn_q.weight"));
    }

    @Test
    void refusesWhatItDoesNotTakeAndTooShortATextByName(@TempDir Path dir) throws Exception {
        String text = golden().path("text").asText();
        String model = model("tiny-mistral").toString();
        MixtuneCliTest.Result stats = MixtuneCliTest.run("imatrix", "--model", model, "-f", text, "--show-statistics");
        assertEquals(2, stats.code());
        assertTrue(stats.err().contains("--show-statistics is llama-imatrix's"), stats.err());
        MixtuneCliTest.Result gguf = MixtuneCliTest.run("imatrix", "-m", "model.gguf", "-f", text);
        assertEquals(2, gguf.code());
        assertTrue(gguf.err().contains("-m is llama-imatrix's"), gguf.err());
        Path out = dir.resolve("short.gguf");
        MixtuneCliTest.Result tooShort = MixtuneCliTest.run("imatrix", "--model", model, "-f", text, "-c", "64", "-o",
                out.toString());
        assertEquals(2, tooShort.code());
        assertTrue(tooShort.err().contains("tokenizes to only 107 tokens; -c 64 needs at least 128"),
                tooShort.err());
        assertFalse(Files.exists(out));
    }

    @Test
    void anAdapterIsFoldedInAsMergeAdapterFoldsIt(@TempDir Path dir) throws Exception {
        String model = model("tiny-mixtral").toString();
        Path adapter = dir.resolve("adapter");
        Path merged = dir.resolve("merged");
        assertEquals(0, MixtuneCliTest.run("init-adapter", "--model", model, "--out", adapter.toString(), "--init",
                "random", "--targets", "all-linear").code());
        assertEquals(0, MixtuneCliTest.run("merge-adapter", "--model", model, "--adapter", adapter.toString(),
                "--out", merged.toString(), "--dtype", "fp32").code());
        String text = golden().path("text").asText();
        Path withAdapter = dir.resolve("adapter.gguf");
        Path ofMerged = dir.resolve("merged.gguf");
        Path ofBase = dir.resolve("base.gguf");
        assertEquals(0, MixtuneCliTest.run("imatrix", "--model", model, "--adapter", adapter.toString(), "-f", text,
                "-c", "32", "--no-ppl", "-o", withAdapter.toString()).code());
        assertEquals(0, MixtuneCliTest.run("imatrix", "--model", merged.toString(), "-f", text, "-c", "32",
                "--no-ppl", "-o", ofMerged.toString()).code());
        MixtuneCliTest.Result base = MixtuneCliTest.run("imatrix", "--model", model, "-f", text, "-c", "32",
                "--no-ppl", "--save-frequency", "2", "-o", ofBase.toString());
        assertEquals(0, base.code(), base.err());
        assertFalse(base.out().contains("Final estimate"), base.out());
        assertArrayEquals(Files.readAllBytes(ofMerged), Files.readAllBytes(withAdapter));
        assertFalse(java.util.Arrays.equals(Files.readAllBytes(ofBase), Files.readAllBytes(withAdapter)));
        // --save-frequency 2: llama-imatrix decodes the 3 chunks of 32 as one batch (n_seq 64) in one micro-batch of
        // 96 tokens, so its chunk counter steps 0 -> 3 and it writes base.gguf.at_3 only (measured), not .at_2
        ImatrixStats atThree = new ImatrixStats(32);
        atThree.load(dir.resolve("base.gguf.at_3"));
        assertEquals(3, atThree.chunkCount());
        assertArrayEquals(new long[] {96}, atThree.counts("blk.0.attn_q.weight"));
        assertFalse(Files.exists(dir.resolve("base.gguf.at_2")));
    }
}
