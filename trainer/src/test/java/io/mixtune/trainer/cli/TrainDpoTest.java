package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDManager;
import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.data.dataset.DataReport;
import io.mixtune.data.dataset.PreferenceDataset;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.data.preference.PreferenceTokenizer;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.trainer.dpo.DpoStep;
import io.mixtune.trainer.dpo.PreferenceBatch;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.sft.MetricsLog;
import io.mixtune.trainer.sft.TrainingData;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * `mixtune train` with train.method dpo on the tiny Mistral and the bundled preference pairs: Stage-DPO separates the
 * pairs it trains on (measured here against the base, independently of the run's own metrics), resume after a kill
 * gives the run that never stopped, and bad pairs are skipped or stop the run with their file:line.
 */
class TrainDpoTest {
    private static final double BETA = 0.1;

    @TempDir
    static Path shared;

    /** The first {@code pairs} bundled preference pairs, in a file of their own. */
    static Path pairs(Path dir, int pairs) throws IOException {
        Path file = dir.resolve("pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(file, lines.limit(pairs).toList());
        }
        return file;
    }

    static Path recipe(Path dir, Path pairs) throws IOException {
        Path recipe = dir.resolve("recipe.yaml");
        Files.writeString(recipe, """
                model:
                  preset: tiny-mistral
                  quantize: none
                lora:
                  r: 8
                  alpha: 16
                  dropout: 0.0
                  targets: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
                data:
                  files: [%s]
                  max_seq_len: 128
                train:
                  method: dpo
                  epochs: 4
                  micro_batch_size: 4
                  lr: 5.0e-3
                  schedule: constant
                  warmup_steps: 0
                dpo:
                  beta: %s
                output_dir: %s
                """.formatted(pairs, BETA, dir.resolve("out")));
        return recipe;
    }

    /** The share of pairs a policy prefers the chosen answer of, and its mean margin, both against the base. */
    record Figures(double accuracy, double margin) {}

    /**
     * Each adapter's reward accuracy and margin on the recipe's training pairs, against the base model (stage 1's
     * reference), from sequence log-probs computed here: beta x ((policy chosen - policy rejected) - (base chosen -
     * base rejected)), averaged over pairs.
     */
    static List<Figures> againstBase(Path recipeFile, List<Path> adapters) {
        Recipe recipe = RecipeReader.read(recipeFile, List.of()).recipe();
        SampleCache.TokenizerFile tokenizer = TrainingData.tokenizer(recipe);
        List<PreferenceSample> pairs = PreferenceDataset.read(
                recipe.data().files().stream().map(Path::of).toList(),
                new PreferenceTokenizer(recipe.data().chatTemplate(tokenizer.bosId(), tokenizer.eosId()),
                        tokenizer.open(), recipe.data().maxSeqLen(), tokenizer.bosId()), false, new DataReport());
        try (NDManager manager = NDManager.newBaseManager()) {
            CausalLm model = MistralCheckpoint.load(TrainingData.baseModelDir(recipe), manager,
                    MistralCheckpoint.DENSE);
            LoraModel lora = new LoraModel(model);
            for (int k = 0; k < adapters.size(); k++) {
                PeftAdapter.load(lora, adapters.get(k), "adapter-" + k);
            }
            lora.setAdaptersEnabled(false);
            float[] base = logProbs(model, pairs, manager);
            lora.setAdaptersEnabled(true);
            List<Figures> figures = new ArrayList<>();
            for (int k = 0; k < adapters.size(); k++) {
                lora.setActiveAdapter("adapter-" + k);
                float[] policy = logProbs(model, pairs, manager);
                int n = pairs.size();
                double accurate = 0;
                double margin = 0;
                for (int i = 0; i < n; i++) {
                    double m = BETA * ((policy[i] - policy[n + i]) - (base[i] - base[n + i]));
                    accurate += m > 0 ? 1 : 0;
                    margin += m;
                }
                figures.add(new Figures(accurate / n, margin / n));
            }
            return figures;
        }
    }

    /** Summed completion log-probs of every pair: chosen of all pairs, then rejected of all pairs. */
    private static float[] logProbs(CausalLm model, List<PreferenceSample> pairs, NDManager manager) {
        int n = pairs.size();
        float[] all = new float[2 * n];
        for (int from = 0; from < n; from += 4) {
            int to = Math.min(n, from + 4);
            PreferenceBatch batch = PreferenceBatch.of(pairs.subList(from, to), new int[to - from], 2);
            float[] rows = DpoStep.sequenceLogProbs(model, batch, manager);
            for (int i = 0; i < to - from; i++) {
                all[from + i] = rows[i];
                all[n + from + i] = rows[to - from + i];
            }
        }
        return all;
    }

    @Test
    void stageDpoSeparatesThePairsAndTheMarginGrowsStageOverStage() throws Exception {
        Path dir = Files.createDirectories(shared.resolve("stages"));
        Path recipe = recipe(dir, pairs(dir, 24));
        MixtuneCliTest.Result run = MixtuneCliTest.run("train", "--recipe", recipe.toString(), "--set", "dpo.stages=3");
        assertEquals(0, run.code(), run.err());
        System.out.println(run.out().lines().filter(l -> l.startsWith("stage ") || l.startsWith("done"))
                .reduce((a, b) -> a + "\n" + b).orElse(""));
        Path out = dir.resolve("out");

        // TRL's metric names, per step, with the stage.
        List<JsonNode> records = MetricsLog.read(out.resolve("metrics.jsonl"));
        assertEquals(List.of(1, 2, 3), records.stream().map(r -> r.get("stage").asInt()).distinct().toList());
        for (String name : List.of("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                "rewards/margins", "logps/chosen", "logps/rejected", "lr", "grad_norm")) {
            assertTrue(records.get(0).has(name), name + " in " + records.get(0));
        }
        assertEquals(Math.log(2), records.get(0).get("loss").asDouble(), 1e-6, "policy = reference at the start");

        // Each stage wrote its adapter; the final one is the last stage's.
        List<Path> adapters = List.of(out.resolve("stage-1/adapter"), out.resolve("stage-2/adapter"),
                out.resolve("stage-3/adapter"));
        assertArrayEquals(Files.readAllBytes(adapters.get(2).resolve("adapter_model.safetensors")),
                Files.readAllBytes(out.resolve("adapter/adapter_model.safetensors")));

        List<Figures> figures = againstBase(recipe, adapters);
        for (int k = 0; k < figures.size(); k++) {
            System.out.printf(Locale.ROOT, "after stage %d, on all 24 training pairs against the base: "
                    + "rewards/accuracies %.3f, rewards/margins %.4f%n", k + 1, figures.get(k).accuracy(),
                    figures.get(k).margin());
        }
        assertTrue(figures.get(2).accuracy() > 0.9, "accuracy after the last stage: " + figures);
        assertTrue(figures.get(0).margin() < figures.get(1).margin()
                && figures.get(1).margin() < figures.get(2).margin(), "margins grow stage over stage: " + figures);
    }

    /** Every step's loss and every evaluation's eval_loss, in order, as "step name value" lines. */
    static List<String> lossesAndEvals(Path metrics) {
        List<String> lines = new ArrayList<>();
        for (JsonNode record : MetricsLog.read(metrics)) {
            for (String name : List.of("loss", "eval_loss", "rewards/margins", "eval_rewards/margins")) {
                if (record.has(name)) {
                    lines.add(record.get("step").asInt() + " " + name);
                }
            }
        }
        return lines;
    }

    static double value(Path metrics, String line) {
        String[] parts = line.split(" ");
        return MetricsLog.read(metrics).stream().filter(r -> r.get("step").asInt() == Integer.parseInt(parts[0])
                && r.has(parts[1])).findFirst().orElseThrow().get(parts[1]).asDouble();
    }

    /**
     * Two stages (4 + 6 steps: 4 and 5 pairs, 3 held out) with LoRA dropout and a validation split, killed (kill -9) after the checkpoint of step
     * 8, in the middle of stage 2, then resumed: every loss, margin and evaluation equals the uninterrupted run's
     * within 1e-6 and the adapters are the same bytes. Resuming from stage 1's last checkpoint runs stage 2 again from
     * a fresh reference to the same end.
     */
    @Test
    void resumingAfterAKillWithinAndBetweenStagesGivesTheUninterruptedRun() throws Exception {
        String[] overrides = {"--set", "dpo.stages=2", "--set", "data.validation_ratio=0.25", "--set",
                "train.micro_batch_size=2", "--set", "train.epochs=2", "--set", "train.save_every=2", "--set",
                "train.keep_last=10", "--set", "train.eval_every=3", "--set", "lora.dropout=0.1", "--set",
                "data.max_seq_len=96"};
        Path whole = Files.createDirectories(shared.resolve("reference"));
        List<String> args = new ArrayList<>(List.of("train", "--recipe", recipe(whole, pairs(whole, 12)).toString()));
        args.addAll(List.of(overrides));
        assertEquals(0, TrainCommandTest.mixtune(whole, args.toArray(String[]::new)).waitFor(),
                Files.readString(whole.resolve("log.txt")));
        Path expectedMetrics = whole.resolve("out/metrics.jsonl");
        List<String> expected = lossesAndEvals(expectedMetrics);
        assertTrue(expected.contains("10 loss") && expected.contains("4 eval_loss") && expected.contains("9 eval_loss"),
                expected.toString());

        Path killed = Files.createDirectories(shared.resolve("killed"));
        args = new ArrayList<>(List.of("train", "--recipe", recipe(killed, pairs(killed, 12)).toString()));
        args.addAll(List.of(overrides));
        Path checkpoint = killed.resolve("out/checkpoints/step-000008");
        Process process = TrainCommandTest.mixtune(killed, args.toArray(String[]::new));
        long deadline = System.nanoTime() + 180_000_000_000L;
        while (!Files.exists(checkpoint) && process.isAlive() && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        process.destroyForcibly().waitFor();
        assertFalse(Files.exists(killed.resolve("out/stage-2/adapter")), "killed in stage 2: "
                + Files.readString(killed.resolve("log.txt")));

        List<String> resume = new ArrayList<>(args);
        resume.add("--resume");
        assertEquals(0, TrainCommandTest.mixtune(killed, resume.toArray(String[]::new)).waitFor());
        assertTrue(Files.readString(killed.resolve("log.txt")).contains("resuming from"));
        assertSameRun(whole.resolve("out"), killed.resolve("out"), expected);

        // From the checkpoint that closed stage 1: stage 2 starts over, its reference the policy of that checkpoint.
        resume = new ArrayList<>(args);
        resume.addAll(List.of("--resume", killed.resolve("out/checkpoints/step-000004").toString()));
        MixtuneCliTest.Result between = MixtuneCliTest.run(resume.toArray(String[]::new));
        assertEquals(0, between.code(), between.err());
        assertTrue(between.out().contains("stage 2 of 2"), between.out());
        assertSameRun(whole.resolve("out"), killed.resolve("out"), expected);
    }

    private static void assertSameRun(Path expectedOut, Path actualOut, List<String> expected) throws IOException {
        Path actualMetrics = actualOut.resolve("metrics.jsonl");
        assertEquals(expected, lossesAndEvals(actualMetrics));
        double worst = 0;
        for (String line : expected) {
            double want = value(expectedOut.resolve("metrics.jsonl"), line);
            double got = value(actualMetrics, line);
            worst = Math.max(worst, Math.abs(want - got));
            assertEquals(want, got, 1e-6, line);
        }
        System.out.printf(Locale.ROOT, "resumed run: %d figures, largest difference %.2e%n", expected.size(), worst);
        for (String adapter : List.of("stage-1/adapter", "stage-2/adapter", "adapter")) {
            Path file = Path.of(adapter, "adapter_model.safetensors");
            assertArrayEquals(Files.readAllBytes(expectedOut.resolve(file)), Files.readAllBytes(actualOut.resolve(file)),
                    adapter + " differs after resuming");
        }
    }

    private static final String GOOD = "{\"prompt\": \"Name a colour.\", \"chosen\": \"Blue.\", "
            + "\"rejected\": \"I will not.\"}";

    /** A file of good pairs with {@code bad} on line 2. */
    private static Path withBadLine(Path dir, String bad) throws IOException {
        Path file = dir.resolve("pairs.jsonl");
        Files.write(file, List.of(GOOD, bad, GOOD, GOOD));
        return file;
    }

    private static final String SAME = "{\"prompt\": \"Hi\", \"chosen\": \"Hello.\", \"rejected\": \"Hello.\"}";
    private static final String EMPTY = "{\"prompt\": \"Hi\", \"chosen\": \"\", \"rejected\": \"Hello.\"}";
    private static final String LONG = "{\"prompt\": \"" + "word ".repeat(300) + "\", \"chosen\": \"Yes.\", "
            + "\"rejected\": \"No.\"}";

    @ParameterizedTest
    @CsvSource({"SAME, chosen equals rejected", "EMPTY, empty completion: the chosen answer is empty",
            "LONG, prompt longer than max_seq_len"})
    void aBadPairStopsTheRunNamingItsLine(String which, String problem, @TempDir Path dir) throws Exception {
        String bad = switch (which) {
            case "SAME" -> SAME;
            case "EMPTY" -> EMPTY;
            default -> LONG;
        };
        Path pairs = withBadLine(dir, bad);
        MixtuneCliTest.Result run = MixtuneCliTest.run("train", "--recipe", recipe(dir, pairs).toString());
        assertEquals(1, run.code(), run.out());
        assertTrue(run.err().contains(pairs + ":2: " + problem), run.err());
        assertFalse(Files.exists(dir.resolve("out/base-model")), "bad data stops the run before the model loads");
    }

    @Test
    void skipInvalidCountsBadPairsByReasonAndTrainsOnTheRest(@TempDir Path dir) throws Exception {
        Path pairs = dir.resolve("pairs.jsonl");
        Files.write(pairs, List.of(GOOD, SAME, GOOD, EMPTY, LONG, GOOD));
        MixtuneCliTest.Result run = MixtuneCliTest.run("train", "--recipe", recipe(dir, pairs).toString(), "--set",
                "data.skip_invalid=true", "--set", "train.max_steps=1");
        assertEquals(0, run.code(), run.err());
        assertTrue(run.out().contains("3 samples") && run.out().contains("from 6 records"), run.out());
        assertTrue(run.out().contains("skipped 3: 1 chosen equals rejected; 1 empty completion; 1 prompt longer than "
                + "max_seq_len;"), run.out());
        assertTrue(Files.isRegularFile(dir.resolve("out/adapter/adapter_model.safetensors")));
    }
}
