package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.run.MetricsLog;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * `mixtune eval`: transformers' (and PEFT's) loss on the assistant tokens of a chat file; the eval_loss training logs,
 * recomputed from the files a run leaves; bad input exits with 2.
 */
class EvalCommandTest {
    /** Mean cross-entropy against transformers + PEFT (interop/make_eval_goldens.py), relative. */
    private static final double GOLDEN_RTOL = 1e-5;

    @TempDir
    Path dir;

    /** The loss, perplexity and target count of eval's last line. */
    record Printed(double loss, double perplexity, long targets) {
        static Printed of(MixtuneCliTest.Result result) {
            String[] words = result.lastLine().trim().split("\\s+");
            assertEquals(List.of("loss", "perplexity", "target_tokens"), List.of(words[0], words[2], words[4]),
                    result.out());
            return new Printed(Double.parseDouble(words[1]), Double.parseDouble(words[3]), Long.parseLong(words[5]));
        }
    }

    private Path chats(String name, long skip, long count) throws IOException {
        Path file = dir.resolve(name);
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/chats.jsonl"))) {
            Files.write(file, lines.skip(skip).limit(count).toList());
        }
        return file;
    }

    /**
     * The golden case's model and random adapter, written by init-model and init-adapter with the seeds the golden
     * script used (the same bytes), evaluated on its four chats: each chat alone in transformers, packed into rows of
     * 2048 here.
     */
    @ParameterizedTest
    @ValueSource(strings = {"tiny-mistral", "tiny-mixtral"})
    void lossEqualsTransformersAndPeft(String name) throws IOException, URISyntaxException {
        Path golden = Path.of(EvalCommandTest.class.getResource("/golden/eval").toURI());
        JsonNode expected = new ObjectMapper().readTree(golden.resolve("expected.json").toFile());
        JsonNode lora = expected.get("lora");
        JsonNode c = expected.get("cases").get(name);
        Path model = dir.resolve("model");
        Path adapter = dir.resolve("adapter");
        assertEquals(0, MixtuneCliTest.run("init-model", "--preset", c.get("preset").asText(), "--seed",
                c.get("model_seed").asText(), "--dtype", "fp32", "--out", model.toString()).code());
        MixtuneCliTest.Result init = MixtuneCliTest.run("init-adapter", "--model", model.toString(), "--out",
                adapter.toString(), "--r", lora.get("r").asText(), "--alpha", lora.get("alpha").asText(), "--targets",
                c.get("adapter_targets").asText(), "--init", lora.get("init").asText(), "--seed",
                c.get("adapter_seed").asText());
        assertEquals(0, init.code(), init.err());
        List<String> common = List.of("--model", model.toString(), "--data",
                golden.resolve(expected.get("chats").asText()).toString(), "--template",
                expected.get("template").asText(), "--max-seq-len", expected.get("max_seq_len").asText());

        Printed base = Printed.of(MixtuneCliTest.run(Stream.concat(Stream.of("eval"), common.stream())
                .toArray(String[]::new)));
        MixtuneCliTest.Result adaptedRun = MixtuneCliTest.run(Stream.concat(Stream.of("eval"), Stream.concat(
                common.stream(), Stream.of("--adapter", adapter.toString()))).toArray(String[]::new));
        assertEquals(0, adaptedRun.code(), adaptedRun.err());
        Printed adapted = Printed.of(adaptedRun);
        double baseLoss = c.get("base_loss").asDouble();
        double loss = c.get("loss").asDouble();
        System.out.printf("eval %s: base %.7f vs transformers %.7f (rel %.1e), adapter %.7f vs PEFT %.7f (rel %.1e), "
                + "%d target tokens%n", name, base.loss(), baseLoss, Math.abs(base.loss() - baseLoss) / baseLoss,
                adapted.loss(), loss, Math.abs(adapted.loss() - loss) / loss, adapted.targets());
        assertEquals(c.get("target_tokens").asLong(), base.targets());
        assertEquals(c.get("target_tokens").asLong(), adapted.targets());
        assertEquals(baseLoss, base.loss(), GOLDEN_RTOL * baseLoss);
        assertEquals(loss, adapted.loss(), GOLDEN_RTOL * loss);
        double perplexity = c.get("perplexity").asDouble();
        assertEquals(perplexity, adapted.perplexity(), GOLDEN_RTOL * loss * perplexity); // d exp(x) = exp(x) dx
    }

    /**
     * A QLoRA run on the tiny Mixtral (LoRA dropout on) with a validation file; eval on the run's base model and final
     * adapter gives the eval_loss the run logged at its end, and on the base model alone the one logged before step 1
     * (PEFT's init has B = 0, so the fresh adapter changes nothing).
     */
    @Test
    void evalOfATrainedAdapterEqualsTheEvalLossTrainingLogged() throws IOException {
        Path train = chats("train.jsonl", 0, 24);
        Path validation = chats("validation.jsonl", 24, 10);
        Path recipe = dir.resolve("recipe.yaml");
        Files.writeString(recipe, """
                model:
                  preset: tiny-mixtral
                  quantize: nf4
                lora:
                  r: 4
                  alpha: 8
                  dropout: 0.1
                  targets: [q_proj, v_proj, w1, w2, w3, lm_head]
                data:
                  files: [%s]
                  validation_files: [%s]
                  max_seq_len: 128
                train:
                  max_steps: 4
                  micro_batch_size: 2
                  lr: 3.0e-3
                output_dir: %s
                """.formatted(train, validation, dir.resolve("out")));
        MixtuneCliTest.Result run = MixtuneCliTest.run("train", "--recipe", recipe.toString());
        assertEquals(0, run.code(), run.err());
        List<JsonNode> evals = MetricsLog.read(dir.resolve("out/metrics.jsonl")).stream()
                .filter(r -> r.has("eval_loss")).toList();
        JsonNode first = evals.get(0);
        JsonNode last = evals.get(evals.size() - 1);
        assertEquals(List.of(0, 4), List.of(first.get("step").asInt(), last.get("step").asInt()));
        // TRL's SFTTrainer's evaluation metrics beside the loss (values: SftGoldenTest#metricsEqualTrlSftTrainers)
        for (JsonNode eval : evals) {
            assertTrue(eval.get("eval_entropy").asDouble() > 0 && eval.get("eval_entropy").asDouble() < Math.log(32000),
                    eval.toString());
            assertTrue(eval.get("eval_mean_token_accuracy").asDouble() >= 0
                    && eval.get("eval_mean_token_accuracy").asDouble() <= 1, eval.toString());
            assertTrue(eval.get("eval_aux_loss").asDouble() > 0, "a Mixtral with the router loss on: " + eval);
        }

        String model = dir.resolve("out/base-model").toString();
        MixtuneCliTest.Result adapted = MixtuneCliTest.run("eval", "--model", model, "--adapter",
                dir.resolve("out/adapter").toString(), "--quantize", "nf4", "--data", validation.toString(),
                "--max-seq-len", "128", "--batch-size", "2");
        assertEquals(0, adapted.code(), adapted.err());
        Printed trained = Printed.of(adapted);
        System.out.printf("eval %.7f, training logged %.7f at step 4 (%d target tokens)%n", trained.loss(),
                last.get("eval_loss").asDouble(), trained.targets());
        assertEquals(last.get("eval_loss").asDouble(), trained.loss(), 1e-6);
        assertEquals(last.get("eval_target_tokens").asLong(), trained.targets());
        assertEquals(Math.exp(trained.loss()), trained.perplexity(), 1e-4 * trained.perplexity());

        Printed base = Printed.of(MixtuneCliTest.run("eval", "--model", model, "--quantize", "nf4", "--data",
                validation.toString(), "--max-seq-len", "128", "--batch-size", "2"));
        System.out.printf("eval of the base model %.7f, training logged %.7f at step 0%n", base.loss(),
                first.get("eval_loss").asDouble());
        assertEquals(first.get("eval_loss").asDouble(), base.loss(), 1e-6);
        assertTrue(trained.loss() < base.loss() - 1e-3, "4 steps moved the loss well beyond 1e-6: " + base + " -> " + trained);
    }

    @Test
    void badInputIsOneLineAndExitCodeTwo() throws IOException {
        Path model = dir.resolve("tiny");
        assertEquals(0, MixtuneCliTest.run("init-model", "--preset", "tiny-mistral", "--out", model.toString()).code());
        Path good = chats("good.jsonl", 0, 2);
        Path bad = dir.resolve("bad.jsonl");
        Files.writeString(bad, Files.readString(good) + "{\"messages\": [{\"role\": \"user\"}]}\n");

        assertUsageError(List.of("--model", dir.resolve("absent").toString(), "--data", good.toString()),
                "--model " + dir.resolve("absent") + ": no such directory (expected a Hugging Face checkpoint)");
        assertUsageError(List.of("--model", dir.toString(), "--data", good.toString()),
                "--model " + dir + ": no Hugging Face checkpoint there (config.json missing)");
        assertUsageError(List.of("--model", model.toString(), "--data", bad.toString()), bad + ":3: ");
        assertUsageError(List.of("--model", model.toString(), "--data", good.toString(), "--template", "llama"),
                "--template expects mistral or chatml, got 'llama'");
        assertUsageError(List.of("--model", model.toString(), "--data", dir.resolve("none.jsonl").toString()),
                "--data " + dir.resolve("none.jsonl") + ": no such file");
        assertUsageError(List.of("--model", model.toString(), "--data", good.toString(), "--adapter", dir.toString()),
                "--adapter " + dir + ": no PEFT adapter there (adapter_config.json missing)");
        // An adapter made for the tiny Mixtral names expert layers (w1, w2, w3) that the tiny Mistral lacks.
        Path mixtral = dir.resolve("mixtral");
        Path mixtralAdapter = dir.resolve("mixtral-adapter");
        assertEquals(0, MixtuneCliTest.run("init-model", "--preset", "tiny-mixtral", "--out", mixtral.toString()).code());
        assertEquals(0, MixtuneCliTest.run("init-adapter", "--model", mixtral.toString(), "--out",
                mixtralAdapter.toString(), "--r", "4").code());
        assertUsageError(List.of("--model", model.toString(), "--data", good.toString(), "--adapter",
                mixtralAdapter.toString()), "--adapter " + mixtralAdapter + ": " + mixtralAdapter.resolve(
                "adapter_model.safetensors") + " does not fit the model: model.layers.0.block_sparse_moe.experts.0.w1: "
                + "the mistral model has no linear layer");
        assertUsageError(List.of("--model", model.toString()), "missing required option --data");
    }

    /** Past the model's positions, and a directory or file where the other is expected: refused, saying which. */
    /**
     * eval reads what SFT trains on, TRL's text records too: every token of a text after its BOS is a target, its EOS
     * included (the bundled tokenizer's own count of the text's pieces, plus one), as language-modeling perplexity.
     */
    @Test
    void aTextFileIsEvaluatedOnEveryToken() throws IOException {
        Path model = dir.resolve("tiny");
        assertEquals(0, MixtuneCliTest.run("init-model", "--preset", "tiny-mistral", "--out", model.toString()).code());
        List<String> texts = List.of("The quick brown fox jumps over the lazy dog.", "Café au lait, s'il vous plaît!");
        Path data = Files.write(dir.resolve("texts.jsonl"), texts.stream()
                .map(t -> new ObjectMapper().createObjectNode().put("text", t).toString()).toList());
        MixtuneCliTest.Result eval = MixtuneCliTest.run("eval", "--model", model.toString(), "--data",
                data.toString());
        assertEquals(0, eval.code(), eval.err());
        long expected = 0;
        try (TextTokenizer tokenizer = TextTokenizer.open(model.resolve("tokenizer.json"), 1, 2)) {
            for (String text : texts) {
                expected += tokenizer.encode(text, false).length + 1;
            }
        }
        Printed printed = Printed.of(eval);
        assertEquals(expected, printed.targets(), eval.out());
        assertEquals(Math.exp(printed.loss()), printed.perplexity(), 1e-3 * printed.perplexity());
    }

    @Test
    void aLengthPastTheModelsPositionsAndAFolderForAFileAreNamed() throws IOException {
        Path model = dir.resolve("tiny");
        assertEquals(0, MixtuneCliTest.run("init-model", "--preset", "tiny-mistral", "--out", model.toString()).code());
        Path good = chats("good.jsonl", 0, 2);
        assertUsageError(List.of("--model", model.toString(), "--data", good.toString(), "--max-seq-len", "4097"),
                "--max-seq-len 4097 exceeds max_position_embeddings 4096 of " + model.resolve("config.json")
                        + ": the model has no position beyond it");
        assertUsageError(List.of("--model", model.toString(), "--data", dir.toString()),
                "--data " + dir + ": is a directory, expected a data file (JSONL or JSON, plain or gzip)");
        assertUsageError(List.of("--model", good.toString(), "--data", good.toString()),
                "--model " + good + ": is a file, expected a Hugging Face checkpoint directory");
        assertUsageError(List.of("--model", model.toString(), "--data", good.toString(), "--adapter", good.toString()),
                "--adapter " + good + ": is a file, expected a PEFT adapter directory");
    }

    private static void assertUsageError(List<String> args, String expected) {
        MixtuneCliTest.Result result = MixtuneCliTest.run(Stream.concat(Stream.of("eval"), args.stream())
                .toArray(String[]::new));
        assertEquals(2, result.code(), result.err());
        assertEquals(1, result.err().strip().lines().count(), result.err());
        assertTrue(result.err().startsWith("mixtune eval: ") && result.err().contains(expected), result.err());
    }
}
