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
import io.mixtune.trainer.run.MetricsLog;
import io.mixtune.trainer.run.TrainingData;
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
    private static final Path QUICKSTART = Path.of("../recipes/quickstart-dpo.yaml");

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

    /**
     * `mixtune train` arguments: recipes/quickstart-dpo.yaml (the tiny Mistral, LoRA on all linear layers, 4 pairs of
     * 128 tokens a step, beta 0.1) at a constant lr 5e-3 on {@code pairs}, writing into DIR/out, with more --set
     * overrides.
     */
    static List<String> train(Path dir, Path pairs, String... sets) {
        List<String> args = new ArrayList<>(List.of("train", "--recipe", QUICKSTART.toString()));
        for (String set : overrides(dir, pairs, sets)) {
            args.addAll(List.of("--set", set));
        }
        return args;
    }

    static List<String> overrides(Path dir, Path pairs, String... sets) {
        // A few pairs seen a few times: a constant 5e-3 separates them quickly; bad pairs stop unless a test says.
        List<String> overrides = new ArrayList<>(List.of("data.files=[" + pairs + "]",
                "output_dir=" + dir.resolve("out"), "train.lr=5e-3", "train.schedule=constant", "data.skip_invalid=false"));
        overrides.addAll(List.of(sets));
        return overrides;
    }

    /** The share of pairs a policy prefers the chosen answer of, and its mean margin, both against the base. */
    record Figures(double accuracy, double margin) {}

    /**
     * Each adapter's reward accuracy and margin on the recipe's training pairs, against the base model (stage 1's
     * reference), from sequence log-probs computed here: beta x ((policy chosen - policy rejected) - (base chosen -
     * base rejected)), averaged over pairs.
     */
    static List<Figures> againstBase(List<String> overrides, List<Path> adapters) {
        Recipe recipe = RecipeReader.read(QUICKSTART, overrides).recipe();
        assertEquals(BETA, recipe.dpo().beta());
        SampleCache.TokenizerFile tokenizer = TrainingData.tokenizer(recipe);
        List<PreferenceSample> pairs = PreferenceDataset.read(
                recipe.data().files().stream().map(Path::of).toList(),
                new PreferenceTokenizer(recipe.data().chatTemplate(tokenizer.bosId(), tokenizer.eosId()),
                        tokenizer.open(), recipe.data().maxSeqLen(), tokenizer.eosId(),
                        PreferenceTokenizer.Truncation.KEEP_START), false, new DataReport());
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
        Path pairs = pairs(dir, 24);
        String[] sets = {"dpo.stages=3", "train.epochs=3", "data.validation_ratio=0"};
        List<String> args = train(dir, pairs, sets);
        MixtuneCliTest.Result run = MixtuneCliTest.run(args.toArray(String[]::new));
        assertEquals(0, run.code(), run.err());
        System.out.println(run.out().lines().filter(l -> l.startsWith("stage ") || l.startsWith("done"))
                .reduce((a, b) -> a + "\n" + b).orElse(""));
        Path out = dir.resolve("out");

        // TRL's metric names, per step, with the stage.
        List<JsonNode> records = MetricsLog.read(out.resolve("metrics.jsonl"));
        assertEquals(List.of(1, 2, 3), records.stream().map(r -> r.get("stage").asInt()).distinct().toList());
        for (String name : List.of("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                "rewards/margins", "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected", "entropy",
                "mean_token_accuracy", "num_tokens", "lr", "grad_norm")) {
            assertTrue(records.get(0).has(name), name + " in " + records.get(0));
        }
        assertEquals(Math.log(2), records.get(0).get("loss").asDouble(), 1e-6, "policy = reference at the start");

        // Each stage wrote its adapter; the final one is the last stage's.
        List<Path> adapters = List.of(out.resolve("stage-1/adapter"), out.resolve("stage-2/adapter"),
                out.resolve("stage-3/adapter"));
        assertArrayEquals(Files.readAllBytes(adapters.get(2).resolve("adapter_model.safetensors")),
                Files.readAllBytes(out.resolve("adapter/adapter_model.safetensors")));

        List<Figures> figures = againstBase(overrides(dir, pairs, sets), adapters);
        for (int k = 0; k < figures.size(); k++) {
            System.out.printf(Locale.ROOT, "after stage %d, on all 24 training pairs against the base: "
                    + "rewards/accuracies %.3f, rewards/margins %.4f%n", k + 1, figures.get(k).accuracy(),
                    figures.get(k).margin());
        }
        assertTrue(figures.get(2).accuracy() > 0.9, "accuracy after the last stage: " + figures);
        assertTrue(figures.get(0).margin() < figures.get(1).margin()
                && figures.get(1).margin() < figures.get(2).margin(), "margins grow stage over stage: " + figures);
    }

    /**
     * Starting from an adapter (model.adapter, as from SFT), stage 1's reference is base + that adapter: the first
     * step's policy equals its reference (loss log 2, margins 0), where against the bare base stage 1's adapter has a
     * clear margin. The reference computed in every step instead of once per stage gives the same losses.
     */
    @Test
    void fromAnAdapterTheReferenceIsThatAdapterComputedOnceOrEveryStep() throws Exception {
        Path dir = Files.createDirectories(shared.resolve("from-adapter"));
        Path pairs = pairs(dir, 8);
        String[] first = {"dpo.stages=1", "train.epochs=2", "data.validation_ratio=0", "train.warmup_steps=0"};
        assertEquals(0, MixtuneCliTest.run(train(dir.resolve("first"), pairs, first).toArray(String[]::new)).code());
        Path adapter = dir.resolve("first/out/adapter");
        Figures againstBase = againstBase(overrides(dir.resolve("first"), pairs, first), List.of(adapter)).get(0);

        List<List<Double>> losses = new ArrayList<>();
        for (String precompute : List.of("true", "false")) {
            Path run = dir.resolve("precompute-" + precompute);
            MixtuneCliTest.Result result = MixtuneCliTest.run(train(run, pairs, "model.adapter=" + adapter,
                    "dpo.stages=2", "train.max_steps=3", "train.warmup_steps=0", "data.validation_ratio=0",
                    "dpo.precompute_reference=" + precompute).toArray(String[]::new));
            assertEquals(0, result.code(), result.err());
            assertTrue(result.out().contains("reference: base + " + adapter), result.out());
            List<JsonNode> records = MetricsLog.read(run.resolve("out/metrics.jsonl"));
            assertEquals(Math.log(2), records.get(0).get("loss").asDouble(), 1e-5);
            assertEquals(0, records.get(0).get("rewards/margins").asDouble(), 1e-5);
            losses.add(records.stream().map(r -> r.get("loss").asDouble()).toList());
        }
        System.out.printf(Locale.ROOT, "the adapter against the base: margin %.4f; as stage 1's reference: losses %s "
                + "(precomputed) and %s (every step)%n", againstBase.margin(), losses.get(0), losses.get(1));
        assertTrue(againstBase.margin() > 0.1, "the adapter differs from the base: " + againstBase);
        for (int i = 0; i < losses.get(0).size(); i++) {
            assertEquals(losses.get(0).get(i), losses.get(1).get(i), 1e-5, "loss of step " + (i + 1));
        }
    }

    /** Which figures metrics.jsonl holds, in order, as "step name" lines: losses, margins, their eval_ twins. */
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
     * Two stages (4 + 6 steps over 4 and 5 pairs, 3 pairs held out) with LoRA dropout, killed (kill -9) after the
     * checkpoint of step 8, in the middle of stage 2, then resumed: every loss, margin and evaluation equals the
     * uninterrupted run's within 1e-6 and the adapters are the same bytes. Resuming from stage 1's last checkpoint
     * runs stage 2 again from a fresh reference to the same end.
     */
    @Test
    void resumingAfterAKillWithinAndBetweenStagesGivesTheUninterruptedRun() throws Exception {
        String[] sets = {"dpo.stages=2", "data.validation_ratio=0.25", "train.micro_batch_size=2", "train.epochs=2",
                "train.save_every=2", "train.keep_last=10", "train.eval_every=3", "lora.dropout=0.1",
                "data.max_seq_len=96"};
        Path whole = Files.createDirectories(shared.resolve("reference"));
        List<String> args = train(whole, pairs(whole, 12), sets);
        assertEquals(0, TrainCommandTest.mixtune(whole, args.toArray(String[]::new)).waitFor(),
                Files.readString(whole.resolve("log.txt")));
        Path expectedMetrics = whole.resolve("out/metrics.jsonl");
        List<String> expected = lossesAndEvals(expectedMetrics);
        assertTrue(expected.contains("10 loss") && expected.contains("4 eval_loss") && expected.contains("9 eval_loss"),
                expected.toString());

        Path killed = Files.createDirectories(shared.resolve("killed"));
        args = train(killed, pairs(killed, 12), sets);
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
            assertArrayEquals(Files.readAllBytes(expectedOut.resolve(file)),
                    Files.readAllBytes(actualOut.resolve(file)),
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
        MixtuneCliTest.Result run = MixtuneCliTest.run(train(dir, pairs).toArray(String[]::new));
        assertEquals(2, run.code(), run.out());
        assertTrue(run.err().contains(pairs + ":2: " + problem), run.err());
        assertFalse(Files.exists(dir.resolve("out/base-model")), "bad data stops the run before the model loads");
    }

    @Test
    void skipInvalidCountsBadPairsByReasonAndTrainsOnTheRest(@TempDir Path dir) throws Exception {
        Path pairs = dir.resolve("pairs.jsonl");
        Files.write(pairs, List.of(GOOD, SAME, GOOD, EMPTY, LONG, GOOD));
        MixtuneCliTest.Result run = MixtuneCliTest.run(train(dir, pairs, "data.skip_invalid=true",
                "train.max_steps=1", "data.validation_ratio=0").toArray(String[]::new));
        assertEquals(0, run.code(), run.err());
        assertTrue(run.out().contains("3 samples") && run.out().contains("from 6 records"), run.out());
        assertTrue(run.out().contains("skipped 3: 1 chosen equals rejected; 1 empty completion; 1 prompt longer than "
                + "max_seq_len;"), run.out());
        assertTrue(Files.isRegularFile(dir.resolve("out/adapter/adapter_model.safetensors")));
    }
}
