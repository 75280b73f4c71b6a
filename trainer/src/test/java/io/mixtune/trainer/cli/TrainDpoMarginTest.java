package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.dataset.PreferenceDataset;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.trainer.Training;
import io.mixtune.trainer.dpo.DpoRecipe;
import io.mixtune.trainer.dpo.MarginStages;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeException;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.reward.RewardScorer;
import io.mixtune.trainer.run.MetricsLog;
import io.mixtune.trainer.run.TrainingListener;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Stage-DPO by margin (dpo.stage_order: margin): stages from the largest margin to the smallest, ties in file order,
 * from the pairs' scores or a reward model's (dpo.margin_model, scored once and kept in output_dir so a resumed run
 * trains the same stages), with what cannot work refused naming the key, the file and the line.
 */
class TrainDpoMarginTest {
    private static final Path QUICKSTART = Path.of("../recipes/quickstart-dpo.yaml");
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    static Path shared;
    static Path rewardModel;

    @BeforeAll
    static void trainARewardModel() throws Exception {
        Path pairs = shared.resolve("reward-pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(pairs, lines.limit(12).toList());
        }
        Path out = shared.resolve("reward");
        Training.load(Path.of("../recipes/quickstart-reward.yaml"), "data.files=[" + pairs + "]",
                "data.validation_ratio=0", "data.max_seq_len=384", "train.max_steps=3", "output_dir=" + out).run();
        rewardModel = out.resolve("adapter");
    }

    /** A pair "Question n?" whose scores give the margin {@code margin}, or none when null. */
    private static String pair(int n, Double margin) {
        String scores = margin == null ? "" : String.format(Locale.ROOT, ", \"score_chosen\": %s, \"score_rejected\": 1.0",
                1.0 + margin);
        return "{\"prompt\": \"Question " + n + "?\", \"chosen\": \"Answer " + n + ".\", \"rejected\": \"No " + n
                + ".\"" + scores + "}";
    }

    private static List<String> overrides(Path dir, Path pairs, String... more) {
        List<String> overrides = new ArrayList<>(List.of("data.files=[" + pairs + "]", "output_dir=" + dir.resolve("out"),
                "data.skip_invalid=false", "data.max_seq_len=96"));
        overrides.addAll(List.of(more));
        return overrides;
    }

    /** The pairs' sources from the largest margin down: the order Stage-DPO trains them in. */
    private static List<String> marginOrder(List<JsonNode> records) {
        return records.stream().sorted(Comparator.comparingDouble((JsonNode r) -> -r.get("margin").floatValue()))
                .map(r -> r.get("source").asText()).toList();
    }

    private static List<List<String>> sources(PreferenceDataset dataset) {
        return dataset.stages().stream().map(stage -> stage.stream().map(PreferenceSample::source).toList()).toList();
    }

    @Test
    void stagesGoFromTheLargestScoreMarginToTheSmallestTiesInFileOrder(@TempDir Path dir) throws Exception {
        double[] margins = {1, 7, 3, 7, 0.5, 2, 3, -1, 5};
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < margins.length; i++) {
            lines.add(pair(i + 1, margins[i]));
        }
        Path pairs = Files.write(dir.resolve("pairs.jsonl"), lines);
        Recipe recipe = RecipeReader.read(QUICKSTART, overrides(dir, pairs, "dpo.stages=3", "dpo.stage_order=margin",
                "data.validation_ratio=0")).recipe();
        String at = pairs + ":";
        // margins 7 (line 2), 7 (4), 5 (9) | 3 (3), 3 (7), 2 (6) | 1 (1), 0.5 (5), -1 (8)
        assertEquals(List.of(List.of(at + 2, at + 4, at + 9), List.of(at + 3, at + 7, at + 6),
                List.of(at + 1, at + 5, at + 8)), sources(DpoRecipe.loadPairs(recipe)));

        // The default stays file order; the validation pairs held out are the same either way.
        Recipe byFile = RecipeReader.read(QUICKSTART, overrides(dir, pairs, "dpo.stages=3",
                "data.validation_ratio=0.25")).recipe();
        Recipe byMargin = RecipeReader.read(QUICKSTART, overrides(dir, pairs, "dpo.stages=3",
                "dpo.stage_order=margin", "data.validation_ratio=0.25")).recipe();
        assertEquals("file", byFile.dpo().stageOrder());
        PreferenceDataset fileOrder = DpoRecipe.loadPairs(byFile);
        PreferenceDataset marginOrder = DpoRecipe.loadPairs(byMargin);
        assertEquals(fileOrder.validation().stream().map(PreferenceSample::source).toList(),
                marginOrder.validation().stream().map(PreferenceSample::source).toList());
        assertEquals(3, marginOrder.validation().size(), "ceil(0.25 x 9), as datasets' train_test_split");
        List<String> trained = new ArrayList<>(fileOrder.stages().stream().flatMap(List::stream)
                .map(PreferenceSample::source).toList());
        List<String> flat = marginOrder.stages().stream().flatMap(List::stream).map(PreferenceSample::source).toList();
        assertEquals(trained.stream().sorted().toList(), flat.stream().sorted().toList());
        double last = Double.POSITIVE_INFINITY;
        for (PreferenceSample sample : marginOrder.stages().stream().flatMap(List::stream).toList()) {
            assertTrue(sample.margin() <= last, "ordered by margin: " + flat);
            last = sample.margin();
        }
    }

    @Test
    void whatCannotWorkIsRefusedNamingTheKeyAndTheFirstPairWithoutScores(@TempDir Path dir) throws Exception {
        Path pairs = Files.write(dir.resolve("pairs.jsonl"), List.of(pair(1, 2.0), pair(2, 1.0), pair(3, null),
                pair(4, null)));
        MixtuneCliTest.Result noScores = MixtuneCliTest.run(validate(dir, pairs, "dpo.stages=2",
                "dpo.stage_order=margin"));
        assertEquals(2, noScores.code(), noScores.err());
        assertTrue(noScores.err().contains("dpo.stage_order: margin needs score_chosen and score_rejected in every "
                + "pair, or dpo.margin_model (a reward model) to score them: " + pairs + ":3 has no scores"),
                noScores.err());

        MixtuneCliTest.Result files = MixtuneCliTest.run(validate(dir, pairs, "dpo.stages=[" + pairs + "," + pairs
                + "]", "dpo.stage_order=margin"));
        assertEquals(2, files.code(), files.err());
        assertTrue(files.err().contains("dpo.stage_order: margin splits data.files into a number of stages by margin,"
                + " but stages lists a file per stage"), files.err());
        MixtuneCliTest.Result modelWithoutOrder = MixtuneCliTest.run(validate(dir, pairs,
                "dpo.margin_model=" + rewardModel));
        assertEquals(2, modelWithoutOrder.code());
        assertTrue(modelWithoutOrder.err().contains("dpo.margin_model: orders the pairs for stage_order: margin, but "
                + "stage_order is file"), modelWithoutOrder.err());

        // A causal LM's adapter as margin_model, and a reward model of another base (tiny-mistral's on tiny-mixtral).
        String causal = "src/test/resources/golden/sft/mistral/adapter";
        String[] causalSets = overrides(dir, pairs, "dpo.stages=2", "dpo.stage_order=margin",
                "dpo.margin_model=" + causal).toArray(String[]::new);
        RecipeException notReward = assertThrows(RecipeException.class, () -> Training.load(QUICKSTART, causalSets)
                .run());
        assertTrue(notReward.getMessage().contains("dpo.margin_model") && notReward.getMessage().contains(
                "a causal LM's adapter (modules_to_save null), not a reward model's"), notReward.getMessage());
        Path other = dir.resolve("other");
        List<String> mixtral = overrides(other, pairs, "dpo.stages=2", "dpo.stage_order=margin",
                "dpo.margin_model=" + rewardModel, "model.preset=tiny-mixtral");
        RecipeException otherBase = assertThrows(RecipeException.class,
                () -> Training.load(QUICKSTART, mixtral.toArray(String[]::new)).run());
        assertTrue(otherBase.getMessage().contains("dpo.margin_model") && otherBase.getMessage().contains(
                rewardModel + ": a reward model for another base than "), otherBase.getMessage());
        assertFalse(Files.exists(other.resolve("out").resolve(MarginStages.CACHE_FILE)));
    }

    private static String[] validate(Path dir, Path pairs, String... sets) {
        List<String> args = new ArrayList<>(List.of("validate", "--recipe", QUICKSTART.toString()));
        for (String set : overrides(dir, pairs, sets)) {
            args.addAll(List.of("--set", set));
        }
        return args.toArray(String[]::new);
    }

    /**
     * A reward model's margins order the stages: each cached margin is RewardScorer's r(prompt + chosen) - r(prompt +
     * rejected) computed here one row at a time, and the stages hold the pairs in the order of those margins.
     */
    @Test
    void aRewardModelsMarginsOrderTheStages(@TempDir Path dir) throws Exception {
        Path pairs = dir.resolve("pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(pairs, lines.skip(3).limit(9).toList());
        }
        Recipe recipe = RecipeReader.read(QUICKSTART, overrides(dir, pairs, "dpo.stages=3", "dpo.stage_order=margin",
                "dpo.margin_model=" + rewardModel, "data.validation_ratio=0")).recipe();
        PreferenceDataset dataset;
        List<String> notes = new ArrayList<>();
        try (DpoRecipe dpo = DpoRecipe.setup(recipe, new TrainingListener() {
            @Override
            public void onNote(String note) {
                notes.add(note);
            }
        })) {
            dataset = dpo.dataset();
        }
        assertTrue(notes.stream().anyMatch(n -> n.startsWith("stage order: 9 pairs scored by " + rewardModel)), notes
                .toString());
        List<JsonNode> cached = MetricsLog.read(dir.resolve("out").resolve(MarginStages.CACHE_FILE));
        List<PreferenceSample> inFileOrder = DpoRecipe.loadPairs(RecipeReader.read(QUICKSTART, overrides(dir, pairs,
                "data.validation_ratio=0", "dpo.stages=1")).recipe()).stages().get(0);
        assertEquals(9, cached.size());
        float[] margins = new float[9];
        try (RewardScorer scorer = RewardScorer.load(dir.resolve("out/base-model"), rewardModel,
                MistralCheckpoint.DENSE, Device.cpu())) {
            for (int i = 0; i < 9; i++) {
                PreferenceSample pair = inFileOrder.get(i);
                long[] chosen = concat(pair.promptIds(), pair.chosenIds());
                long[] rejected = concat(pair.promptIds(), pair.rejectedIds());
                float[] rewards = {scorer.rewards(List.of(chosen), 1)[0], scorer.rewards(List.of(rejected), 1)[0]};
                assertEquals(pair.source(), cached.get(i).get("source").asText());
                assertEquals(rewards[0], cached.get(i).get("reward_chosen").floatValue(), 1e-5);
                assertEquals(rewards[1], cached.get(i).get("reward_rejected").floatValue(), 1e-5);
                margins[i] = cached.get(i).get("margin").floatValue();
                assertEquals(rewards[0] - rewards[1], margins[i], 2e-5);
            }
        }
        Integer[] order = {0, 1, 2, 3, 4, 5, 6, 7, 8};
        Arrays.sort(order, (a, b) -> Float.compare(margins[b], margins[a]));
        List<String> expected = Arrays.stream(order).map(i -> inFileOrder.get(i).source()).toList();
        assertEquals(List.of(expected.subList(0, 3), expected.subList(3, 6), expected.subList(6, 9)), sources(dataset));
        assertFalse(expected.equals(inFileOrder.stream().map(PreferenceSample::source).toList()),
                "the margins reorder the pairs");
    }

    /**
     * Killed (kill -9) in stage 2 and resumed: the margins come from output_dir (the file untouched, nothing scored
     * again) and the run ends as the uninterrupted one: the same losses and the same stage adapters, byte for byte.
     */
    @Test
    void resumingAfterAKillReadsTheMarginsAndTrainsTheSameStages() throws Exception {
        Path pairs = shared.resolve("resume-pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(pairs, lines.limit(8).toList());
        }
        String[] sets = {"dpo.stages=2", "dpo.stage_order=margin", "dpo.margin_model=" + rewardModel,
                "data.validation_ratio=0", "train.micro_batch_size=2", "train.epochs=2", "train.save_every=2",
                "train.keep_last=10", "train.lr=5e-3", "train.schedule=constant"};
        Path whole = Files.createDirectories(shared.resolve("whole"));
        assertEquals(0, TrainCommandTest.mixtune(whole, train(whole, pairs, sets)).waitFor(),
                Files.readString(whole.resolve("log.txt")));

        Path killed = Files.createDirectories(shared.resolve("killed"));
        Process process = TrainCommandTest.mixtune(killed, train(killed, pairs, sets));
        Path checkpoint = killed.resolve("out/checkpoints/step-000006");
        long deadline = System.nanoTime() + 180_000_000_000L;
        while (!Files.exists(checkpoint) && process.isAlive() && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        process.destroyForcibly().waitFor();
        assertFalse(Files.exists(killed.resolve("out/adapter")), "killed in stage 2: "
                + Files.readString(killed.resolve("log.txt")));
        Path cache = killed.resolve("out").resolve(MarginStages.CACHE_FILE);
        byte[] margins = Files.readAllBytes(cache);
        Files.setLastModifiedTime(cache, FileTime.fromMillis(1_000_000_000_000L));
        // Scored in two processes: libtorch's CPU kernels (MKL) promise equal results only to rounding across
        // processes (alignment, threads), so the margins are compared as numbers and by the order they give.
        List<JsonNode> wholeMargins = MetricsLog.read(whole.resolve("out").resolve(MarginStages.CACHE_FILE));
        List<JsonNode> killedMargins = MetricsLog.read(cache);
        assertEquals(wholeMargins.size(), killedMargins.size());
        for (int i = 0; i < wholeMargins.size(); i++) {
            assertEquals(wholeMargins.get(i).get("source").asText(), killedMargins.get(i).get("source").asText());
            assertEquals(wholeMargins.get(i).get("margin").floatValue(),
                    killedMargins.get(i).get("margin").floatValue(),
                    1e-5, "margin of " + wholeMargins.get(i).get("source").asText());
        }
        assertEquals(marginOrder(wholeMargins), marginOrder(killedMargins), "the stages' order");

        List<String> resume = new ArrayList<>(List.of(train(killed, pairs, sets)));
        resume.add("--resume");
        assertEquals(0, TrainCommandTest.mixtune(killed, resume.toArray(String[]::new)).waitFor(),
                Files.readString(killed.resolve("log.txt")));
        String log = Files.readString(killed.resolve("log.txt"));
        assertTrue(log.contains("stage order: the margins of 8 pairs from " + cache), log);
        assertEquals(FileTime.fromMillis(1_000_000_000_000L), Files.getLastModifiedTime(cache), "not written again");
        assertArrayEquals(margins, Files.readAllBytes(cache));
        List<String> expected = TrainDpoTest.lossesAndEvals(whole.resolve("out/metrics.jsonl"));
        assertEquals(expected, TrainDpoTest.lossesAndEvals(killed.resolve("out/metrics.jsonl")));
        for (String line : expected) {
            assertEquals(TrainDpoTest.value(whole.resolve("out/metrics.jsonl"), line),
                    TrainDpoTest.value(killed.resolve("out/metrics.jsonl"), line), 1e-6, line);
        }
        for (String adapter : List.of("stage-1/adapter", "stage-2/adapter", "adapter")) {
            Path file = Path.of(adapter, "adapter_model.safetensors");
            assertArrayEquals(Files.readAllBytes(whole.resolve("out").resolve(file)),
                    Files.readAllBytes(killed.resolve("out").resolve(file)), adapter + " differs after resuming");
        }
    }

    private static String[] train(Path dir, Path pairs, String... sets) {
        List<String> args = new ArrayList<>(List.of("train", "--recipe", QUICKSTART.toString()));
        for (String set : overrides(dir, pairs, sets)) {
            args.addAll(List.of("--set", set));
        }
        return args.toArray(String[]::new);
    }

    private static long[] concat(long[] a, long[] b) {
        long[] joined = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, joined, a.length, b.length);
        return joined;
    }
}
