package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.trainer.sft.MetricsLog;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** `mixtune eval`: the eval_loss training logs, recomputed from the files a run leaves; bad input exits with 2. */
class EvalCommandTest {
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
                "--model " + dir.resolve("absent") + ": no Hugging Face checkpoint there (config.json missing)");
        assertUsageError(List.of("--model", model.toString(), "--data", bad.toString()), bad + ":3: ");
        assertUsageError(List.of("--model", model.toString(), "--data", good.toString(), "--template", "llama"),
                "--template expects mistral or chatml, got 'llama'");
        assertUsageError(List.of("--model", model.toString(), "--data", dir.resolve("none.jsonl").toString()),
                "--data " + dir.resolve("none.jsonl") + ": no such file");
        assertUsageError(List.of("--model", model.toString(), "--data", good.toString(), "--adapter", dir.toString()),
                "no PEFT adapter there (adapter_config.json missing)");
        assertUsageError(List.of("--model", model.toString()), "missing required option --data");
    }

    private static void assertUsageError(List<String> args, String expected) {
        MixtuneCliTest.Result result = MixtuneCliTest.run(Stream.concat(Stream.of("eval"), args.stream())
                .toArray(String[]::new));
        assertEquals(2, result.code(), result.err());
        assertEquals(1, result.err().strip().lines().count(), result.err());
        assertTrue(result.err().startsWith("mixtune eval: ") && result.err().contains(expected), result.err());
    }
}
