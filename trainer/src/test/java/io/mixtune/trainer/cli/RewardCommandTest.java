package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.trainer.Training;
import io.mixtune.trainer.run.TrainingResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `mixtune reward` on a reward model trained here for 3 steps: scores per pair with the accuracy and mean margin they
 * give, a reward per chat, and the adapters of the other kind refused both ways.
 */
class RewardCommandTest {
    @TempDir
    static Path dir;
    static Path pairs;
    static Path out;

    @BeforeAll
    static void trainARewardModel() throws Exception {
        pairs = dir.resolve("pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(pairs, lines.limit(12).toList());
        }
        out = dir.resolve("out");
        TrainingResult result = Training.load(Path.of("../recipes/quickstart-reward.yaml"),
                "data.files=[" + pairs + "]", "data.validation_ratio=0", "data.max_seq_len=384", "train.max_steps=3",
                "output_dir=" + out).run();
        assertEquals(3, result.steps());
    }

    @Test
    void pairsGetTheirRewardsAccuracyAndMeanMargin() throws Exception {
        Path scores = dir.resolve("scores.jsonl");
        MixtuneCliTest.Result run = MixtuneCliTest.run("reward", "--model", out.resolve("base-model").toString(),
                "--adapter", out.resolve("adapter").toString(), "--data", pairs.toString(), "--max-seq-len", "384",
                "--output", scores.toString());
        assertEquals(0, run.code(), run.err());
        List<String> lines = Files.readAllLines(scores);
        assertEquals(12, lines.size());
        ObjectMapper json = new ObjectMapper();
        int accurate = 0;
        double margins = 0;
        for (String line : lines) {
            JsonNode record = json.readTree(line);
            double margin = record.get("reward_chosen").doubleValue() - record.get("reward_rejected").doubleValue();
            assertEquals(margin, record.get("margin").doubleValue(), 1e-6);
            assertTrue(record.get("source").asText().startsWith(pairs.toString() + ":"), record.toString());
            accurate += margin > 0 ? 1 : 0;
            margins += margin;
        }
        assertEquals(String.format(Locale.ROOT, "12 pairs: accuracy %.4f, mean margin %.4f; scores in %s",
                accurate / 12.0, margins / 12, scores), run.out().strip());
    }

    /**
     * A pair that cannot be scored whole stops with its file:line, or with --skip-invalid is counted and left out: one
     * longer than --max-seq-len (never cut, as TRL's RewardTrainer drops it) and one whose prompt alone is.
     */
    @Test
    void anUnscorablePairStopsOrIsSkipped() throws Exception {
        Path long40 = dir.resolve("with-long-prompt.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            // 130, 115, 321 and 309 tokens; lines 3 and 4 have prompts over 128 tokens
            Files.write(long40, lines.skip(37).limit(4).toList());
        }
        List<String> args = List.of("reward", "--model", out.resolve("base-model").toString(), "--adapter",
                out.resolve("adapter").toString(), "--data", long40.toString(), "--max-seq-len", "128");
        MixtuneCliTest.Result stopped = MixtuneCliTest.run(args.toArray(String[]::new));
        assertEquals(2, stopped.code());
        assertTrue(stopped.err().contains(long40 + ":1: pair longer than max_seq_len: 130 tokens"), stopped.err());
        List<String> skipping = new java.util.ArrayList<>(args);
        skipping.addAll(List.of("--skip-invalid", "--output", dir.resolve("skipped.jsonl").toString()));
        MixtuneCliTest.Result skipped = MixtuneCliTest.run(skipping.toArray(String[]::new));
        assertEquals(0, skipped.code(), skipped.err());
        assertTrue(skipped.out().startsWith("1 pairs: accuracy ") && skipped.out().contains("(3 skipped)"),
                skipped.out());
    }

    @Test
    void chatsGetOneRewardEach() throws Exception {
        Path chats = dir.resolve("chats.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/chats.jsonl"))) {
            Files.write(chats, lines.limit(5).toList());
        }
        MixtuneCliTest.Result run = MixtuneCliTest.run("reward", "--model", out.resolve("base-model").toString(),
                "--adapter", out.resolve("adapter").toString(), "--data", chats.toString(), "--max-seq-len", "96");
        assertEquals(0, run.code(), run.err());
        List<String> lines = run.out().strip().lines().toList();
        assertEquals(5, lines.size());
        for (String line : lines) {
            assertTrue(new ObjectMapper().readTree(line).get("reward").isNumber(), line);
        }
    }

    /** A base model or reward adapter cut short is an input error naming the file (exit 1 before). */
    @Test
    void aDamagedModelOrAdapterIsAnInputError() throws Exception {
        Path model = Files.createDirectories(dir.resolve("cut-model"));
        Path adapter = Files.createDirectories(dir.resolve("cut-adapter"));
        for (Path[] copy : List.of(new Path[] {out.resolve("base-model"), model},
                new Path[] {out.resolve("adapter"), adapter})) {
            try (Stream<Path> files = Files.list(copy[0])) {
                for (Path file : files.filter(Files::isRegularFile).toList()) {
                    byte[] bytes = Files.readAllBytes(file);
                    Files.write(copy[1].resolve(file.getFileName()), file.toString().endsWith(".safetensors")
                            ? java.util.Arrays.copyOf(bytes, bytes.length - 100) : bytes);
                }
            }
        }
        for (Path[] inputs : List.of(new Path[] {model, out.resolve("adapter")},
                new Path[] {out.resolve("base-model"), adapter})) {
            MixtuneCliTest.Result run = MixtuneCliTest.run("reward", "--model", inputs[0].toString(), "--adapter",
                    inputs[1].toString(), "--data", pairs.toString(), "--max-seq-len", "384");
            assertEquals(2, run.code(), run.err());
            Path damaged = inputs[0] == model ? model : adapter;
            assertTrue(run.err().startsWith("mixtune reward: " + damaged + "/"), run.err());
            assertTrue(run.err().contains("truncated file?"), run.err());
        }
    }

    @Test
    void aCausalLmAdapterIsNotARewardModelNorTheReverse() {
        MixtuneCliTest.Result causal = MixtuneCliTest.run("reward", "--model", out.resolve("base-model").toString(),
                "--adapter", "src/test/resources/golden/sft/mistral/adapter", "--data", pairs.toString());
        assertEquals(2, causal.code());
        assertTrue(causal.err().contains("a causal LM's adapter (modules_to_save null), not a reward model's: it has "
                + "no score head (train one with train.method: reward)"), causal.err());
        MixtuneCliTest.Result reward = MixtuneCliTest.run("eval", "--model", out.resolve("base-model").toString(),
                "--adapter", out.resolve("adapter").toString(), "--data", pairs.toString());
        assertEquals(2, reward.code());
        assertTrue(reward.err().contains("a reward model's adapter (task_type SEQ_CLS, modules_to_save [score]), not "
                + "a causal LM's: score it with `mixtune reward`"), reward.err());
    }
}
