package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.safetensors.DType;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `merge --method lorahub`: an adapter trained on the examples' task (A) and random noise (B) on the tiny Mistral;
 * the search leans on A, its composed loss is no worse than the best input's plus the penalty, a seed repeats it, and
 * what it wrote is the adapter `eval` scores at the printed loss. Bad input: adapters of another model or targets, a
 * file without a trained token.
 */
class LoraHubMergeTest {
    @TempDir
    static Path dir;
    static Path base;
    static Path trained;
    static Path noise;
    static Path examples;

    @BeforeAll
    static void adapters() throws IOException {
        examples = dir.resolve("few.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/chats.jsonl"))) {
            Files.write(examples, lines.limit(2).toList());
        }
        Path recipe = dir.resolve("recipe.yaml");
        Files.writeString(recipe, """
                model:
                  preset: tiny-mistral
                lora:
                  r: 8
                  alpha: 16
                  dropout: 0.0
                  targets: [q_proj, v_proj, lm_head]
                data:
                  files: [%s]
                  max_seq_len: 256
                train:
                  max_steps: 15
                  micro_batch_size: 2
                  lr: 5.0e-3
                  warmup_steps: 2
                  eval_every: 0
                  save_every: 0
                output_dir: %s
                """.formatted(examples, dir.resolve("run")));
        MixtuneCliTest.Result train = MixtuneCliTest.run("train", "--recipe", recipe.toString());
        assertEquals(0, train.code(), train.out() + train.err());
        base = dir.resolve("run/base-model");
        trained = dir.resolve("run/adapter");
        noise = dir.resolve("noise");
        MixtuneCliTest.Result init = MixtuneCliTest.run("init-adapter", "--model", base.toString(), "--out",
                noise.toString(), "--r", "8", "--alpha", "16", "--targets", "q_proj,v_proj,lm_head", "--init", "random",
                "--seed", "5");
        assertEquals(0, init.code(), init.err());
    }

    /** Input losses, weights, composed loss and evaluations, as printed. */
    private record Printed(double[] inputLosses, double[] weights, double loss, double objective, int evaluations) {
        static Printed of(MixtuneCliTest.Result result) {
            assertEquals(0, result.code(), result.out() + result.err());
            List<String> lines = result.out().lines().toList();
            double[] inputs = lines.stream().filter(l -> l.startsWith("input ")).mapToDouble(
                    l -> Double.parseDouble(l.substring(l.lastIndexOf(' ') + 1))).toArray();
            String weightsLine = lines.stream().filter(l -> l.startsWith("weights ")).findFirst().orElseThrow();
            double[] weights = Arrays.stream(weightsLine.substring(8).split(",")).mapToDouble(Double::parseDouble)
                    .toArray();
            String[] composed = lines.stream().filter(l -> l.startsWith("composed loss")).findFirst().orElseThrow()
                    .split("\\s+");
            return new Printed(inputs, weights, Double.parseDouble(composed[2]), Double.parseDouble(composed[4]),
                    Integer.parseInt(composed[composed.length - 1]));
        }
    }

    private static MixtuneCliTest.Result lorahub(Path out, String... extra) {
        List<String> args = new java.util.ArrayList<>(List.of("merge", "--method", "lorahub", "--base",
                base.toString(), "--inputs", trained + "," + noise, "--data", examples.toString(), "--out",
                out.toString()));
        args.addAll(List.of(extra));
        return MixtuneCliTest.run(args.toArray(String[]::new));
    }

    @Test
    void theSearchLeansOnTheAdapterOfTheTaskAndASeedRepeatsIt() {
        long start = System.nanoTime();
        MixtuneCliTest.Result first = lorahub(dir.resolve("hub"), "--budget", "6", "--seed", "3");
        Printed printed = Printed.of(first);
        System.out.printf("%s(%.1f s)%n", first.out(), (System.nanoTime() - start) / 1e9);
        Printed again = Printed.of(lorahub(dir.resolve("hub-again"), "--budget", "6", "--seed", "3"));

        assertTrue(Arrays.equals(printed.weights(), again.weights()), "same seed, other weights");
        assertEquals(8, printed.evaluations(), "2 inputs alone + a budget of 6");
        double trainedLoss = printed.inputLosses()[0];
        double noiseLoss = printed.inputLosses()[1];
        assertTrue(trainedLoss < noiseLoss, "the trained adapter must fit the examples better: " + trainedLoss + " vs "
                + noiseLoss);
        assertTrue(printed.weights()[0] > printed.weights()[1], Arrays.toString(printed.weights()));
        assertTrue(printed.objective() <= Math.min(trainedLoss, noiseLoss) + 0.05 + 1e-6, "objective "
                + printed.objective());
        // What was written is what was scored: eval of the base with it prints the composed loss.
        EvalCommandTest.Printed eval = EvalCommandTest.Printed.of(MixtuneCliTest.run("eval", "--model",
                base.toString(), "--adapter", dir.resolve("hub").toString(), "--data", examples.toString()));
        assertEquals(printed.loss(), eval.loss(), 1e-5);
    }

    /** QLoRA adapters are scored on the NF4 base they were trained on, and eval of the result agrees. */
    @Test
    void anNf4BaseScoresAsEvalWithQuantizeNf4() {
        Printed printed = Printed.of(lorahub(dir.resolve("hub-nf4"), "--budget", "1", "--quantize", "nf4"));
        assertEquals(3, printed.evaluations());
        EvalCommandTest.Printed eval = EvalCommandTest.Printed.of(MixtuneCliTest.run("eval", "--model",
                base.toString(), "--quantize", "nf4", "--adapter", dir.resolve("hub-nf4").toString(), "--data",
                examples.toString()));
        assertEquals(printed.loss(), eval.loss(), 1e-5);
    }

    @Test
    void adaptersOfOtherTargetsAreRefusedNamingTheDifference() {
        Path other = dir.resolve("other-targets");
        assertEquals(0, MixtuneCliTest.run("init-adapter", "--model", base.toString(), "--out", other.toString(),
                "--r", "8", "--alpha", "16", "--targets", "q_proj,lm_head", "--init", "random").code());
        MixtuneCliTest.Result result = MixtuneCliTest.run("merge", "--method", "lorahub", "--base", base.toString(),
                "--inputs", trained + "," + other, "--data", examples.toString(), "--out", dir.resolve("x").toString());
        assertEquals(2, result.code(), result.err());
        assertTrue(result.err().contains("adapt different modules: model.layers.0.self_attn.v_proj in " + trained
                + " but not in " + other), result.err());
        assertFalse(Files.exists(dir.resolve("x")));
    }

    @Test
    void adaptersOfAnotherModelAreRefusedNamingTheDifference() {
        // A Mistral of hidden size 32 (tiny-mistral's is 64), one layer, the same vocabulary.
        Path narrow = dir.resolve("narrow");
        RandomCheckpoint.write(new ModelConfig(ModelConfig.ModelType.MISTRAL, 32, 48, 1, 4, 2, 8, 32000, 1e-5, 1e4, null,
                256, false, 0, 0, 0.0, 1, 2), narrow, 1, DType.F32, Long.MAX_VALUE, 0.1);
        Path other = dir.resolve("narrow-adapter");
        Path another = dir.resolve("narrow-adapter-2");
        for (Path adapter : List.of(other, another)) {
            assertEquals(0, MixtuneCliTest.run("init-adapter", "--model", narrow.toString(), "--out",
                    adapter.toString(), "--r", "8", "--alpha", "16", "--targets", "q_proj,v_proj,lm_head", "--init",
                    "random").code());
        }
        MixtuneCliTest.Result mixed = MixtuneCliTest.run("merge", "--method", "lorahub", "--base", base.toString(),
                "--inputs", trained + "," + other, "--data", examples.toString(), "--out", dir.resolve("y").toString());
        assertEquals(2, mixed.code(), mixed.err());
        assertTrue(mixed.err().contains("the adapters are for different models"), mixed.err());
        assertTrue(mixed.err().contains("module lm_head is [out, in] = [32000, 32] but [32000, 64]"), mixed.err());
        MixtuneCliTest.Result bothOther = MixtuneCliTest.run("merge", "--method", "lorahub", "--base",
                base.toString(), "--inputs", other + "," + another, "--data", examples.toString(), "--out",
                dir.resolve("y").toString());
        assertEquals(2, bothOther.code(), bothOther.err());
        assertTrue(bothOther.err().contains(other + ": does not fit the base model: "), bothOther.err());
        assertFalse(Files.exists(dir.resolve("y")));
    }

    @Test
    void examplesWithoutATrainedTokenAreRefused() throws IOException {
        // A question longer than max_seq_len (2048) leaves no room for its answer: the chat has no trained token.
        Path userOnly = dir.resolve("long-question.jsonl");
        Files.writeString(userOnly, "{\"messages\": [{\"role\": \"user\", \"content\": \"" + "word ".repeat(3000)
                + "\"}, {\"role\": \"assistant\", \"content\": \"ok\"}]}\n");
        MixtuneCliTest.Result result = MixtuneCliTest.run("merge", "--method", "lorahub", "--base", base.toString(),
                "--inputs", trained + "," + noise, "--data", userOnly.toString(), "--out", dir.resolve("z").toString());
        assertEquals(2, result.code(), result.err());
        assertTrue(result.err().contains("data " + userOnly + ": no assistant token to score"), result.err());
        assertFalse(Files.exists(dir.resolve("z")));
        assertTrue(Files.isRegularFile(trained.resolve(PeftAdapter.CONFIG_FILE)));
    }
}
