package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.trainer.run.MetricsLog;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `mixtune train` with train.method kto (recipes/quickstart-kto.yaml on the tiny Mistral) on unpaired examples made of
 * the bundled pairs: it logs TRL's KTO metrics, a run killed after a checkpoint and resumed equals the run that never
 * stopped (every loss, KL and evaluation within 1e-6, the adapter the same bytes), a changed kto key is refused on
 * resume, and a micro-batch of one is refused by validate naming the key.
 */
class TrainKtoTest {
    private static final Path QUICKSTART = Path.of("../recipes/quickstart-kto.yaml");
    private static final ObjectMapper JSON = new ObjectMapper();

    /** The first {@code pairs} bundled pairs as unpaired records, chosen (desirable) and rejected alternating. */
    private static Path examples(Path dir, int pairs) throws IOException {
        List<String> out = new ArrayList<>();
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            for (String line : lines.limit(pairs).toList()) {
                JsonNode pair = JSON.readTree(line);
                for (String side : List.of("chosen", "rejected")) {
                    ArrayNode messages = (ArrayNode) pair.get(side);
                    ObjectNode record = JSON.createObjectNode();
                    record.set("prompt", JSON.createArrayNode().addAll(List.of(messages.get(0))));
                    record.set("completion", JSON.createArrayNode().add(messages.get(messages.size() - 1)));
                    record.put("label", side.equals("chosen"));
                    out.add(JSON.writeValueAsString(record));
                }
            }
        }
        Path file = dir.resolve("examples.jsonl");
        Files.write(file, out);
        return file;
    }

    private static List<String> train(Path dir, Path examples, String... sets) {
        List<String> args = new ArrayList<>(List.of("train", "--recipe", QUICKSTART.toString(), "--set",
                "data.files=[" + examples + "]", "--set", "output_dir=" + dir.resolve("out"), "--set",
                "data.skip_invalid=false", "--set", "train.lr=5e-3", "--set", "train.schedule=constant"));
        for (String set : sets) {
            args.addAll(List.of("--set", set));
        }
        return args;
    }

    /**
     * 12 examples (3 held out), micro-batches of 2 over 2 epochs (10 steps) with LoRA dropout, killed (kill -9) after
     * the checkpoint of step 6 and resumed.
     */
    @Test
    void resumingAfterAKillGivesTheUninterruptedRunAndAChangedKtoKeyIsRefused(@TempDir Path shared) throws Exception {
        String[] sets = {"data.validation_ratio=0.25", "train.micro_batch_size=2", "train.epochs=2",
                "train.save_every=2", "train.keep_last=10", "train.eval_every=3", "lora.dropout=0.1",
                "data.max_seq_len=96", "train.warmup_steps=0", "train.metric_for_best_model=loss"};
        Path whole = Files.createDirectories(shared.resolve("reference"));
        List<String> args = train(whole, examples(whole, 6), sets);
        assertEquals(0, TrainCommandTest.mixtune(whole, args.toArray(String[]::new)).waitFor(),
                Files.readString(whole.resolve("log.txt")));
        Path expectedMetrics = whole.resolve("out/metrics.jsonl");
        List<String> expected = figures(expectedMetrics);
        assertTrue(expected.contains("10 loss") && expected.contains("3 eval_loss") && expected.contains("10 kl"),
                expected.toString());
        JsonNode last = MetricsLog.read(expectedMetrics).stream().filter(r -> r.has("loss")).reduce((a, b) -> b)
                .orElseThrow();
        for (String name : List.of("kl", "entropy", "rewards/chosen", "logps/chosen", "rewards/rejected",
                "logps/rejected", "rewards/margins", "logits/chosen", "logits/rejected")) {
            assertTrue(MetricsLog.read(expectedMetrics).stream().anyMatch(r -> r.has(name)), "TRL's " + name);
        }
        assertTrue(last.get("kl").asDouble() >= 0, last.toString());

        // train.metric_for_best_model: the loop compares the evaluations, and a resumed run goes on from the best
        // its checkpoint recorded (best_metric and best_global_step are among the figures compared)
        TrainBestModelTest.recordsTheBestEvaluation(expectedMetrics, "eval_loss", false);
        Path killed = Files.createDirectories(shared.resolve("killed"));
        KilledRun.resumesToTheUninterruptedRun("KTO", killed, train(killed, examples(killed, 6), sets), "step-000006",
                "kto.beta=0.2", "kto.beta: 0.1 -> 0.2", expected, whole.resolve("out"), TrainKtoTest::figures);
    }

    @Test
    void aMicroBatchOfOneIsRefusedNamingTheKey() {
        MixtuneCliTest.Result validate = MixtuneCliTest.run("validate", "--recipe", QUICKSTART.toString(), "--set",
                "train.micro_batch_size=1");
        assertEquals(2, validate.code(), validate.out());
        assertTrue(validate.err().contains("train.micro_batch_size") && validate.err().contains("must be > 1"),
                validate.err());
        MixtuneCliTest.Result apo = MixtuneCliTest.run("validate", "--recipe", QUICKSTART.toString(), "--set",
                "train.micro_batch_size=1", "--set", "kto.loss=apo_zero_unpaired");
        assertEquals(0, apo.code(), apo.err());
        assertTrue(apo.out().contains("training examples"), apo.out());
    }

    private static List<String> figures(Path metrics) {
        List<String> lines = new ArrayList<>();
        for (JsonNode record : MetricsLog.read(metrics)) {
            for (String name : List.of("loss", "kl", "eval_loss", "eval_kl", "rewards/margins",
                    "eval_rewards/margins", "best_metric", "best_global_step")) {
                if (record.has(name)) {
                    lines.add(record.get("step").asInt() + " " + name);
                }
            }
        }
        return lines;
    }
}
