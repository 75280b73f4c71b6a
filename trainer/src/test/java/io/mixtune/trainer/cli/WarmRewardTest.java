package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.Refusal;
import io.mixtune.trainer.Training;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeException;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.run.MetricsLog;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A WARM recipe (warm.members 2) end to end on the tiny Mistral: members that differ as warm.vary says from one start,
 * the average equal to `mixtune merge --method warm` of the members, the report equal to `mixtune reward` on the
 * validation pairs, a resume that skips the finished member and ends as the uninterrupted run, and bad keys named.
 */
class WarmRewardTest {
    private static final Path RECIPE = Path.of("../recipes/quickstart-reward.yaml");

    @TempDir
    static Path dir;
    static Path trainPairs;
    static Path validationPairs;
    static Path whole;
    static TrainingResult result;
    static final List<Object> events = new ArrayList<>();

    @BeforeAll
    static void trainTwoMembers() throws Exception {
        List<String> all;
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            all = lines.toList();
        }
        trainPairs = dir.resolve("train.jsonl");
        Files.write(trainPairs, all.subList(0, 12));
        validationPairs = dir.resolve("validation.jsonl");
        Files.write(validationPairs, all.subList(all.size() - 6, all.size()));
        whole = dir.resolve("whole");
        Training training = warm(whole);
        training.listener(new TrainingListener() {
            @Override
            public void onNote(String line) {
                events.add(line);
            }

            @Override
            public void onRunStarted(RunStarted event) {
                events.add(event);
            }

            @Override
            public void onRunFinished(RunFinished event) {
                events.add(event);
            }
        });
        result = training.run();
    }

    /** 2 members of 2 steps of 2 pairs, a checkpoint every step, held out: the validation file. */
    private static Training warm(Path out, String... more) {
        List<String> sets = new ArrayList<>(List.of("data.files=[" + trainPairs + "]", "data.validation_ratio=0",
                "data.validation_files=[" + validationPairs + "]", "data.max_seq_len=384", "train.max_steps=2",
                "train.micro_batch_size=2", "train.save_every=1", "warm.members=2", "warm.vary.seed=[1, 2]",
                "warm.vary.learning_rate=[2.0e-3, 1.0e-3]", "warm.vary.lora_dropout=[0.0, 0.1]",
                "output_dir=" + out));
        sets.addAll(List.of(more));
        return Training.load(RECIPE, sets.toArray(String[]::new));
    }

    @Test
    void eachMemberIsARunOfItsOwnVariedAsListedFromOneStart() throws Exception {
        assertFalse(result.cancelled());
        assertEquals(whole.resolve("adapter"), result.adapterDir());
        assertEquals(4, result.steps(), "2 steps per member");
        List<Path> started = events.stream().filter(e -> e instanceof TrainingListener.RunStarted)
                .map(e -> ((TrainingListener.RunStarted) e).outputDir()).toList();
        assertEquals(List.of(whole.resolve("members/0"), whole.resolve("members/1")), started);
        assertEquals(3, events.stream().filter(e -> e instanceof TrainingListener.RunFinished).count(),
                "each member's, then WARM's");
        assertTrue(events.contains("WARM member 1 (2 of 2) in " + whole.resolve("members/1") + ": data_seed 2, lr "
                + "1.00e-03, lora_dropout 0.10"), events.toString());

        Recipe first = RecipeReader.read(whole.resolve("members/0/recipe.yaml"), List.of()).recipe();
        Recipe second = RecipeReader.read(whole.resolve("members/1/recipe.yaml"), List.of()).recipe();
        assertEquals(List.of(1L, 2.0e-3, 0.0), List.of(first.train().dataSeed(), first.train().lr(),
                first.lora().dropout()));
        assertEquals(List.of(2L, 1.0e-3, 0.1), List.of(second.train().dataSeed(), second.train().lr(),
                second.lora().dropout()));
        assertEquals(first.train().seed(), second.train().seed(), "one initialisation");
        assertEquals(whole.resolve("base-model").toString(), first.model().path(), "one base, written once");
        assertFalse(first.warm().enabled());

        // One start: before its first step each member is the same model (the same head, B = 0), so the same loss.
        assertEquals(firstEvaluation(whole.resolve("members/0")).get("eval_loss").doubleValue(),
                firstEvaluation(whole.resolve("members/1")).get("eval_loss").doubleValue());
        for (String tensor : List.of("base_model.model.score.weight",
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")) {
            assertFalse(Arrays.equals(floats(whole.resolve("members/0/adapter"), tensor),
                    floats(whole.resolve("members/1/adapter"), tensor)), tensor + " differs between the members");
        }
        for (Path member : List.of(whole.resolve("members/0"), whole.resolve("members/1"))) {
            assertTrue(Files.isRegularFile(member.resolve("metrics.jsonl")));
            assertTrue(Files.isDirectory(member.resolve("checkpoints")));
        }
    }

    @Test
    void theAverageIsMergeWarmOfTheMembers() throws Exception {
        Path merged = dir.resolve("merged");
        MixtuneCliTest.Result merge = MixtuneCliTest.run("merge", "--method", "warm", "--inputs",
                whole.resolve("members/0/adapter") + "," + whole.resolve("members/1/adapter"), "--out",
                merged.toString());
        assertEquals(0, merge.code(), merge.err());
        assertSameTensors(merged, result.adapterDir());
    }

    @Test
    void theReportIsMixtuneRewardOnTheValidationPairs() throws Exception {
        JsonNode report = new ObjectMapper().readTree(whole.resolve("warm-report.json").toFile());
        List<JsonNode> rows = new ArrayList<>();
        report.get("members").forEach(rows::add);
        rows.add(report.get("average"));
        assertEquals(3, rows.size());
        for (JsonNode row : rows) {
            MixtuneCliTest.Result reward = MixtuneCliTest.run("reward", "--model", whole.resolve("base-model")
                    .toString(), "--adapter", row.get("adapter").asText(), "--data", validationPairs.toString(),
                    "--max-seq-len", "384", "--skip-invalid", "--output", dir.resolve("scores.jsonl").toString());
            assertEquals(0, reward.code(), reward.err());
            Matcher summary = Pattern.compile("(\\d+) pairs: accuracy ([0-9.]+), mean margin ([-0-9.]+)")
                    .matcher(reward.out());
            assertTrue(summary.find(), reward.out());
            assertEquals(report.get("validation_pairs").asInt(), Integer.parseInt(summary.group(1)));
            assertEquals(summary.group(2), String.format(Locale.ROOT, "%.4f", row.get("accuracy").doubleValue()));
            assertEquals(summary.group(3), String.format(Locale.ROOT, "%.4f", row.get("mean_margin").doubleValue()));
            double margins = 0;
            List<String> scores = Files.readAllLines(dir.resolve("scores.jsonl"));
            for (String line : scores) {
                margins += Float.parseFloat(new ObjectMapper().readTree(line).get("margin").asText());
            }
            assertEquals(margins / scores.size(), row.get("mean_margin").doubleValue(), 0.0, "bit for bit");
        }
        assertEquals(whole.resolve("members/1/adapter").toString(), rows.get(1).get("adapter").asText());
        assertEquals(0.1, rows.get(1).get("lora_dropout").doubleValue());
    }

    @Test
    void aResumeSkipsTheFinishedMemberAndEndsAsTheUninterruptedRun() throws Exception {
        Path cut = dir.resolve("cut");
        Training first = warm(cut);
        first.listener(new TrainingListener() {
            int runs;

            @Override
            public void onRunStarted(RunStarted event) {
                runs++;
            }

            @Override
            public void onStep(StepEnded event) {
                if (runs == 2 && event.step() == 1) {
                    first.cancel();
                }
            }
        });
        TrainingResult cancelled = first.run();
        assertTrue(cancelled.cancelled());
        assertTrue(Files.isDirectory(cut.resolve("members/0/adapter")));
        assertFalse(Files.exists(cut.resolve("members/1/adapter")));
        assertFalse(Files.exists(cut.resolve("adapter")));

        Exception refused = assertThrows(Refusal.class, () -> warm(cut).run());
        assertTrue(refused.getMessage().contains("already holds a run") && refused.getMessage().contains("members/"),
                refused.getMessage());

        Exception named = assertThrows(Refusal.class, () -> warm(cut).resume(cut.resolve("members/1")).run());
        assertTrue(named.getMessage().contains("resumes each member from its own newest checkpoint"),
                named.getMessage());

        Map<String, byte[]> finished = MixtuneCliTest.snapshot(cut.resolve("members/0"));
        List<String> notes = new ArrayList<>();
        TrainingResult resumed = warm(cut).resume().listener(new TrainingListener() {
            @Override
            public void onNote(String line) {
                notes.add(line);
            }
        }).run();
        assertFalse(resumed.cancelled());
        assertFalse(resumed.alreadyFinished(), "member 1 trained its last step");
        assertTrue(notes.contains("WARM member 0 (1 of 2): finished (" + cut.resolve("members/0/adapter")
                + "), skipped"), notes.toString());
        assertTrue(notes.stream().anyMatch(n -> n.startsWith("resuming from " + cut.resolve(
                "members/1/checkpoints/step-000001") + " at step 1")), notes.toString());
        MixtuneCliTest.assertSameFiles(finished, MixtuneCliTest.snapshot(cut.resolve("members/0")));
        assertSameTensors(result.adapterDir(), resumed.adapterDir());
        JsonNode report = new ObjectMapper().readTree(cut.resolve("warm-report.json").toFile());
        JsonNode uninterrupted = new ObjectMapper().readTree(whole.resolve("warm-report.json").toFile());
        assertEquals(uninterrupted.get("average").get("mean_margin"), report.get("average").get("mean_margin"));

        // Resumed once more, every member had finished: the result says so, as an SFT run's does, no step ran, and
        // the average is written again from the same members.
        TrainingResult again = warm(cut).resume().run();
        assertTrue(again.alreadyFinished());
        assertFalse(again.cancelled());
        assertEquals(List.of(), again.stages());
        assertSameTensors(result.adapterDir(), again.adapterDir());
    }

    @Test
    void badWarmKeysAreNamed() throws Exception {
        Path adapter = Files.createDirectories(dir.resolve("some-adapter"));
        Files.writeString(adapter.resolve("adapter_config.json"), "{}");
        Map<List<String>, List<String>> cases = Map.of(
                List.of("train.method=sft", "warm.members=2"), List.of("warm.members", "train.method: reward"),
                List.of("warm.members=2", "warm.vary.seed=[1, 2, 3]"),
                List.of("warm.vary.seed", "3 values for 2 members"),
                List.of("warm.members=1"), List.of("warm.members", "2 or more"),
                List.of("warm.vary.learning_rate=[1.0e-3]"), List.of("warm.vary.learning_rate", "warm.members is 0"),
                List.of("warm.members=2", "warm.vary.learning_rate=[2.0]"),
                List.of("warm.vary.learning_rate", "(0, 1)"),
                List.of("warm.members=2", "data.validation_ratio=0"), List.of("warm.members", "validation"),
                List.of("warm.members=2", "warm.vary.lora_dropout=[0.0, 0.1]", "model.adapter=" + adapter),
                List.of("warm.vary.lora_dropout", "model.adapter"),
                List.of("train.method=sft", "reward.label_noise=0.25"), List.of("reward.label_noise", "reward"),
                List.of("reward.label_noise=1.5"), List.of("reward.label_noise", "[0, 1]"),
                List.of("warm.memberz=2"), List.of("warm.memberz", "did you mean members?"));
        cases.forEach((sets, expected) -> {
            RecipeException e = assertThrows(RecipeException.class, () -> RecipeReader.read(RECIPE, sets));
            for (String part : expected) {
                assertTrue(e.getMessage().contains(part), sets + ": " + e.getMessage());
            }
        });
        MixtuneCliTest.Result validate = MixtuneCliTest.run("validate", "--recipe", RECIPE.toString(), "--set",
                "warm.members=2", "--set", "train.method=dpo");
        assertEquals(2, validate.code());
        assertTrue(validate.out().contains("--set warm.members=2: warm.members: WARM trains and averages reward "
                + "models: it needs train.method: reward, got dpo") || validate.err().contains("warm.members"),
                validate.out() + validate.err());
    }

    private static JsonNode firstEvaluation(Path run) {
        return MetricsLog.read(run.resolve("metrics.jsonl")).stream().filter(r -> r.has("eval_loss")).findFirst()
                .orElseThrow();
    }

    private static float[] floats(Path adapter, String tensor) {
        try (SafetensorsReader reader = SafetensorsReader.open(adapter.resolve("adapter_model.safetensors"))) {
            return reader.readFloats(tensor);
        }
    }

    private static void assertSameTensors(Path expected, Path actual) {
        try (SafetensorsReader a = SafetensorsReader.open(expected.resolve("adapter_model.safetensors"));
                SafetensorsReader b = SafetensorsReader.open(actual.resolve("adapter_model.safetensors"))) {
            assertEquals(a.names(), b.names());
            for (String name : a.names()) {
                assertArrayEquals(a.readFloats(name), b.readFloats(name), name);
            }
        }
        assertNotEquals(expected, actual);
    }
}
