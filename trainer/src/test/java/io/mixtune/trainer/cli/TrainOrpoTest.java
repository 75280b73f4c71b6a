package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
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
 * `mixtune train` with train.method orpo (recipes/quickstart-orpo.yaml on the tiny Mistral): a run killed after a
 * checkpoint and resumed equals the run that never stopped (every loss and evaluation within 1e-6, the adapter the
 * same bytes), a changed orpo key is refused on resume, and validate refuses, naming the key, the cpo settings TRL
 * would ignore, TRL's keys that are mixtune's under other names, and DPO's stages.
 */
class TrainOrpoTest {
    private static final Path QUICKSTART = Path.of("../recipes/quickstart-orpo.yaml");

    private static Path pairs(Path dir, int count) throws IOException {
        Path file = dir.resolve("pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(file, lines.limit(count).toList());
        }
        return file;
    }

    private static List<String> train(Path dir, Path pairs, String... sets) {
        List<String> args = new ArrayList<>(List.of("train", "--recipe", QUICKSTART.toString(), "--set",
                "data.files=[" + pairs + "]", "--set", "output_dir=" + dir.resolve("out"), "--set",
                "train.lr=5e-3", "--set", "train.schedule=constant"));
        for (String set : sets) {
            args.addAll(List.of("--set", set));
        }
        return args;
    }

    /**
     * 8 pairs (2 held out), micro-batches of 2 over 2 epochs (6 steps) with LoRA dropout, killed (kill -9) after the
     * checkpoint of step 4 and resumed.
     */
    @Test
    void resumingAfterAKillGivesTheUninterruptedRunAndAChangedOrpoKeyIsRefused(@TempDir Path shared)
            throws Exception {
        String[] sets = {"data.validation_ratio=0.25", "train.micro_batch_size=2", "train.epochs=2",
                "train.save_every=2", "train.keep_last=10", "train.eval_every=3", "lora.dropout=0.1",
                "data.max_seq_len=96", "train.warmup_steps=0", "train.metric_for_best_model=log_odds_ratio"};
        Path whole = Files.createDirectories(shared.resolve("reference"));
        List<String> args = train(whole, pairs(whole, 8), sets);
        assertEquals(0, TrainCommandTest.mixtune(whole, args.toArray(String[]::new)).waitFor(),
                Files.readString(whole.resolve("log.txt")));
        Path expectedMetrics = whole.resolve("out/metrics.jsonl");
        List<String> expected = figures(expectedMetrics);
        assertTrue(expected.contains("6 loss") && expected.contains("6 eval_loss") && expected.contains("3 nll_loss"),
                expected.toString());
        for (String name : List.of("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected", "nll_loss", "log_odds_ratio",
                "log_odds_chosen", "eval_log_odds_ratio")) {
            assertTrue(MetricsLog.read(expectedMetrics).stream().anyMatch(r -> r.has(name)), "TRL's " + name);
        }

        // train.metric_for_best_model: the loop compares the evaluations, and a resumed run goes on from the best
        // its checkpoint recorded (best_metric and best_global_step are among the figures compared)
        TrainBestModelTest.recordsTheBestEvaluation(expectedMetrics, "eval_log_odds_ratio", true);
        Path killed = Files.createDirectories(shared.resolve("killed"));
        KilledRun.resumesToTheUninterruptedRun("ORPO", killed, train(killed, pairs(killed, 8), sets), "step-000004",
                "orpo.beta=0.2", "orpo.beta: 0.1 -> 0.2", expected, whole.resolve("out"), TrainOrpoTest::figures);
    }

    @Test
    void cpoSettingsTrlWouldIgnoreAreRefusedNamingTheKey() {
        String[][] refusals = {
            {"cpo.label_smoothing=0.1", "cpo.loss=hinge", "cpo.label_smoothing"},
            {"cpo.simpo_gamma=1.0", "cpo.loss=sigmoid", "cpo.simpo_gamma"},
            {"cpo.alpha=0.5", "cpo.loss=simpo", "AlphaPO"},
            {"cpo.loss=alphapo", "cpo.cpo_alpha=0", "cpo.loss"},
            {"dpo.stages=2", "cpo.loss=sigmoid", "dpo.stages"},
            {"cpo.max_length=256", "cpo.loss=sigmoid", "data.max_seq_len"},
        };
        for (String[] refusal : refusals) {
            MixtuneCliTest.Result validate = MixtuneCliTest.run("validate", "--recipe", QUICKSTART.toString(), "--set",
                    "train.method=cpo", "--set", refusal[0], "--set", refusal[1]);
            assertEquals(2, validate.code(), validate.out());
            assertTrue(validate.err().contains(refusal[2]), validate.err());
        }
        MixtuneCliTest.Result simpo = MixtuneCliTest.run("validate", "--recipe", QUICKSTART.toString(), "--set",
                "train.method=cpo", "--set", "cpo.loss=simpo", "--set", "cpo.cpo_alpha=0", "--set",
                "cpo.simpo_gamma=1.0", "--set", "cpo.label_smoothing=0.1");
        assertEquals(0, simpo.code(), simpo.err());
        assertTrue(simpo.out().contains("training pairs, 20 validation pairs"), simpo.out());
    }

    private static List<String> figures(Path metrics) {
        List<String> lines = new ArrayList<>();
        for (JsonNode record : MetricsLog.read(metrics)) {
            for (String name : List.of("loss", "nll_loss", "log_odds_ratio", "eval_loss", "eval_rewards/margins",
                    "best_metric", "best_global_step")) {
                if (record.has(name)) {
                    lines.add(record.get("step").asInt() + " " + name);
                }
            }
        }
        return lines;
    }
}
