package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.merging.MergeConfig;
import io.mixtune.merging.MergeMethod;
import io.mixtune.trainer.InvalidOptionException;
import io.mixtune.trainer.MergeAdapter;
import io.mixtune.trainer.Merging;
import io.mixtune.trainer.ModelEval;
import io.mixtune.trainer.Quantization;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Supplier;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The Java entry points under `mixtune eval`, `merge` and `merge-adapter` ({@link ModelEval}, {@link Merging},
 * {@link MergeAdapter}), called without the command line: the same numbers and bytes as the commands, nothing printed,
 * and input they cannot use refused with {@link InvalidOptionException} naming the option and the file.
 */
class JavaEntryPointsTest {
    private static final Path GOLDEN_CHECKPOINTS = Path.of("../merging/src/test/resources/golden/checkpoints")
            .toAbsolutePath().normalize();

    @TempDir
    static Path shared;
    static Path model;
    static Path adapter;
    static Path chats;

    /** The tiny Mistral, a random rank-2 adapter on it (B is not 0, so it changes the loss) and four chats. */
    @BeforeAll
    static void fixtures() throws IOException {
        model = shared.resolve("tiny");
        assertEquals(0, MixtuneCliTest.run("init-model", "--preset", "tiny-mistral", "--out", model.toString())
                .code());
        adapter = shared.resolve("adapter");
        MixtuneCliTest.Result init = MixtuneCliTest.run("init-adapter", "--model", model.toString(), "--out",
                adapter.toString(), "--r", "2", "--targets", "q_proj,v_proj", "--init", "random", "--seed", "3");
        assertEquals(0, init.code(), init.err());
        chats = shared.resolve("chats.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/chats.jsonl"))) {
            Files.write(chats, lines.limit(4).toList());
        }
    }

    /** Runs {@code call} with System.out captured; asserts it printed nothing. */
    private static <T> T silently(Supplier<T> call) {
        ByteArrayOutputStream printed = new ByteArrayOutputStream();
        PrintStream stdout = System.out;
        System.setOut(new PrintStream(printed, true, StandardCharsets.UTF_8));
        T result;
        try {
            result = call.get();
        } finally {
            System.setOut(stdout);
        }
        assertEquals("", printed.toString(StandardCharsets.UTF_8), "the entry point printed");
        return result;
    }

    @Test
    void evalGivesTheLossTheCommandPrints() {
        MixtuneCliTest.Result cli = MixtuneCliTest.run("eval", "--model", model.toString(), "--adapter",
                adapter.toString(), "--data", chats.toString(), "--max-seq-len", "128", "--batch-size", "2");
        assertEquals(0, cli.code(), cli.err());
        EvalCommandTest.Printed printed = EvalCommandTest.Printed.of(cli);

        List<String> progress = new ArrayList<>();
        ModelEval.Result result = silently(() -> ModelEval.of(model, chats).adapter(adapter).maxSeqLen(128)
                .batchSize(2).progress(progress::add).run());
        System.out.printf("ModelEval loss %.7f, mixtune eval printed %.7f (%d target tokens)%n", result.loss(),
                printed.loss(), result.targetTokens());
        assertEquals(cli.lastLine().trim(), String.format(Locale.ROOT, "loss %.7f  perplexity %.4f  target_tokens %d",
                result.loss(), result.perplexity(), result.targetTokens()));
        assertEquals(printed.targets(), result.targetTokens());
        assertEquals(Map.of("eval_loss", result.loss(), "eval_perplexity", Math.exp(result.loss()),
                "eval_target_tokens", result.targetTokens()), result.metrics());
        assertEquals(List.of("eval_loss", "eval_perplexity", "eval_target_tokens"),
                List.copyOf(result.metrics().keySet()));
        assertEquals("mistral", result.modelType());
        assertEquals(Quantization.NONE, result.quantization());
        assertEquals(ModelEval.Template.MISTRAL, result.template());
        assertEquals(128, result.maxSeqLen());
        assertNull(result.proxy());
        assertEquals(2, progress.size(), progress.toString());
        assertTrue(progress.get(0).startsWith("data " + chats + ": "), progress.toString());

        ModelEval.Result base = silently(() -> ModelEval.of(model, chats).maxSeqLen(128).batchSize(2).run());
        assertEquals(result.targetTokens(), base.targetTokens());
        assertTrue(Math.abs(base.loss() - result.loss()) > 1e-4, "the random adapter changes the loss: " + base.loss()
                + " vs " + result.loss());
    }

    @Test
    void evalRefusesWhatItCannotUseNamingTheOptionAndFile() throws IOException {
        Path absent = shared.resolve("absent");
        assertRefused("model", "--model " + absent + ": no such directory",
                () -> ModelEval.of(absent, chats).run());
        assertRefused("model", "--model " + chats + ": is a file", () -> ModelEval.of(chats, chats).run());
        assertRefused("data", "--data " + shared + ": is a directory", () -> ModelEval.of(model, shared).run());
        assertRefused("max-seq-len", "--max-seq-len 4097 exceeds max_position_embeddings 4096 of "
                + model.resolve("config.json"), () -> ModelEval.of(model, chats).maxSeqLen(4097).run());
        assertRefused("batch-size", "--batch-size must be at least 1, got 0",
                () -> ModelEval.of(model, chats).batchSize(0).run());
        assertRefused("adapter", "--adapter " + model + ": no PEFT adapter there (adapter_config.json missing)",
                () -> ModelEval.of(model, chats).adapter(model).run());
        // A record the data pipeline rejects is its own typed error, at its line (exit 2 from the command too).
        Path userOnly = Files.writeString(shared.resolve("user-only.jsonl"),
                "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n");
        InvalidRecordException record = assertThrows(InvalidRecordException.class,
                () -> ModelEval.of(model, userOnly).run());
        assertTrue(record.getMessage().startsWith(userOnly + ":1: "), record.getMessage());
    }

    /** Linear merge of the golden checkpoints: the bytes `mixtune merge` writes, and what was merged with what weight. */
    @Test
    void mergeWritesTheBytesTheCommandWrites(@TempDir Path dir) throws IOException {
        Path m0 = GOLDEN_CHECKPOINTS.resolve("m0");
        Path m1 = GOLDEN_CHECKPOINTS.resolve("m1");
        Path byCli = dir.resolve("cli");
        MixtuneCliTest.Result cli = MixtuneCliTest.run("merge", "--method", "linear", "--inputs", m0 + "," + m1,
                "--weights", "3,1", "--out", byCli.toString());
        assertEquals(0, cli.code(), cli.err());

        Path byApi = dir.resolve("api");
        Merging.Result result = silently(() -> Merging.of(new MergeConfig(MergeMethod.LINEAR, null,
                MergeConfig.models(List.of(m0, m1), List.of(3.0, 1.0)), MergeConfig.Parameters.none(), null, null,
                null, null, byApi)).run());
        assertEquals(byApi, result.out());
        assertEquals("linear", result.method());
        assertEquals(List.of(m0, m1), result.members());
        assertArrayEquals(new double[] {0.75, 0.25}, result.weights(), 1e-12);
        assertFalse(result.adapters());
        assertNull(result.base());
        assertEquals(cli.out().lines().skip(1).toList(), result.lines().subList(1, result.lines().size()),
                "the weights line as the command prints it");
        assertArrayEquals(Files.readAllBytes(byCli.resolve("model.safetensors")),
                Files.readAllBytes(byApi.resolve("model.safetensors")));

        Path config = Files.writeString(dir.resolve("merge.yaml"), "merge_method: linear\nmodels:\n  - model: " + m0
                + "\n  - model: " + m1 + "\nout: " + m0 + "\n");
        InvalidOptionException inside = assertThrows(InvalidOptionException.class,
                () -> Merging.fromYaml(config, null));
        assertEquals("config", inside.option());
        assertTrue(inside.getMessage().contains("the input " + m0), inside.getMessage());
    }

    @Test
    void mergeAdapterWritesTheBytesTheCommandWrites(@TempDir Path dir) throws IOException {
        Path byCli = dir.resolve("cli");
        MixtuneCliTest.Result cli = MixtuneCliTest.run("merge-adapter", "--model", model.toString(), "--adapter",
                adapter.toString(), "--out", byCli.toString(), "--dtype", "fp32");
        assertEquals(0, cli.code(), cli.err());

        Path byApi = dir.resolve("api");
        MergeAdapter.Result result = silently(() -> MergeAdapter.of(model, adapter, byApi)
                .dtype(io.mixtune.model.safetensors.DType.F32).run());
        assertEquals(List.of(byApi.resolve("model.safetensors")), result.weightFiles());
        assertTrue(result.copiedFiles().containsAll(List.of("config.json", "tokenizer.json")),
                result.copiedFiles().toString());
        for (String file : result.copiedFiles()) {
            assertTrue(Files.isRegularFile(byApi.resolve(file)), file);
        }
        try (Stream<Path> files = Files.list(byCli)) {
            for (Path file : files.toList()) {
                assertArrayEquals(Files.readAllBytes(file), Files.readAllBytes(byApi.resolve(file.getFileName())),
                        file.getFileName().toString());
            }
        }

        assertRefused("out", "--out " + byApi + " exists and is not empty",
                () -> MergeAdapter.of(model, adapter, byApi).run());
        assertRefused("out", "the input " + model, () -> MergeAdapter.of(model, adapter, model.resolve("merged"))
                .force(true).run());
        assertFalse(Files.exists(model.resolve("merged")));
    }

    /** {@code call} throws InvalidOptionException for {@code option}, its message holding {@code message}. */
    private static void assertRefused(String option, String message, Runnable call) {
        InvalidOptionException refused = assertThrows(InvalidOptionException.class, () -> silently(() -> {
            call.run();
            return null;
        }));
        assertEquals(option, refused.option(), refused.getMessage());
        assertTrue(refused.getMessage().contains(message), refused.getMessage());
    }
}
