package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `mixtune train` never loses a run and never mixes two: a plain run refuses an output_dir that holds a run, --force
 * deletes only what mixtune wrote, one process writes into an output_dir at a time (a kill -9 leaves no stuck lock),
 * --resume refuses a changed recipe, and a preset's cached base-model is never reused for another preset.
 */
class RunSafetyTest {
    /** 3 short steps of TrainCommandTest's recipe, a checkpoint after each, no evaluation in between. */
    private static final List<String> SHORT = List.of("train.max_steps=3", "train.save_every=1", "train.keep_last=3",
            "train.eval_every=0");

    static MixtuneCliTest.Result train(Path recipe, String... extra) {
        return MixtuneCliTest.run(trainArgs(recipe, extra));
    }

    static String[] trainArgs(Path recipe, String... extra) {
        List<String> args = new ArrayList<>(List.of("train", "--recipe", recipe.toString()));
        for (String set : SHORT) {
            args.addAll(List.of("--set", set));
        }
        args.addAll(List.of(extra));
        return args.toArray(String[]::new);
    }

    /** A finished 3-step run in DIR/out, with a user's files beside and inside its checkpoints, and an adapter copy. */
    private static Path finishedRunWithUserFiles(Path dir) throws IOException {
        Path recipe = TrainCommandTest.recipe(dir);
        MixtuneCliTest.Result first = train(recipe);
        assertEquals(0, first.code(), first.err());
        Path out = dir.resolve("out");
        Files.writeString(out.resolve("notes.txt"), "my notes on this run");
        Files.writeString(out.resolve("checkpoints/README.md"), "step 2 looked best");
        Files.writeString(out.resolve("checkpoints/step-000003/eval-by-hand.txt"), "0.91");
        Path keep = Files.createDirectories(out.resolve("adapter-best"));
        for (String file : List.of("adapter_config.json", "adapter_model.safetensors")) {
            Files.copy(out.resolve("adapter").resolve(file), keep.resolve(file));
        }
        return recipe;
    }

    @Test
    void aPlainTrainIntoARunIsRefusedAndChangesNothing(@TempDir Path dir) throws Exception {
        Path recipe = finishedRunWithUserFiles(dir);
        Map<String, byte[]> before = MixtuneCliTest.snapshot(dir.resolve("out"));
        MixtuneCliTest.Result again = train(recipe);
        assertEquals(2, again.code(), again.out() + again.err());
        assertTrue(again.err().contains("already holds a run") && again.err().contains("--resume continues it from ")
                && again.err().contains("step-000003") && again.err().contains("--force starts over"), again.err());
        assertEquals(1, again.err().strip().lines().count(), again.err());
        MixtuneCliTest.assertSameFiles(before, MixtuneCliTest.snapshot(dir.resolve("out")));
    }

    @Test
    void forceStartsOverDeletingOnlyWhatMixtuneWrote(@TempDir Path dir) throws Exception {
        Path recipe = finishedRunWithUserFiles(dir);
        Path out = dir.resolve("out");
        MixtuneCliTest.Result forced = train(recipe, "--set", "train.max_steps=2", "--force");
        assertEquals(0, forced.code(), forced.err());
        assertEquals("my notes on this run", Files.readString(out.resolve("notes.txt")));
        assertEquals("step 2 looked best", Files.readString(out.resolve("checkpoints/README.md")));
        assertEquals("0.91", Files.readString(out.resolve("checkpoints/step-000003/eval-by-hand.txt")));
        assertTrue(Files.isRegularFile(out.resolve("adapter-best/adapter_model.safetensors")), "a user's adapter copy");
        try (Stream<Path> left = Files.list(out.resolve("checkpoints/step-000003"))) {
            assertEquals(List.of("eval-by-hand.txt"), left.map(p -> p.getFileName().toString()).toList(),
                    "the earlier run's checkpoint files are gone, the user's file stays");
        }
        assertTrue(Files.isRegularFile(out.resolve("checkpoints/step-000002/trainer_state.json")));
        assertEquals(2, TrainCommandTest.losses(out.resolve("metrics.jsonl")).size(), "the new run's metrics only");
        assertTrue(Files.readString(out.resolve("recipe.yaml")).contains("max_steps: 2"));
        assertTrue(Files.isRegularFile(out.resolve("adapter/adapter_model.safetensors")));
    }

    /**
     * Run A trains; run B into the same output_dir is refused while A lives (even with --resume, which would continue
     * A's checkpoints under A's feet); A is killed with kill -9, and the lock it held does not outlive it.
     */
    @Test
    void aSecondProcessIsRefusedAndAKilledRunLeavesNoStuckLock(@TempDir Path dir) throws Exception {
        Path recipe = TrainCommandTest.recipe(dir);
        String[] longRun = trainArgs(recipe, "--set", "train.max_steps=40");
        Process first = TrainCommandTest.mixtune(dir, longRun);
        Path checkpoint = dir.resolve("out/checkpoints/step-000001");
        long deadline = System.nanoTime() + 120_000_000_000L;
        while (!Files.exists(checkpoint) && first.isAlive() && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertTrue(first.isAlive() && Files.exists(checkpoint), Files.readString(dir.resolve("log.txt")));

        Path second = Files.createDirectories(dir.resolve("second"));
        List<String> resume = new ArrayList<>(Arrays.asList(longRun));
        resume.add("--resume");
        Process other = TrainCommandTest.mixtune(second, resume.toArray(String[]::new));
        int code = other.waitFor();
        String log = Files.readString(second.resolve("log.txt"));
        assertTrue(first.isAlive(), "the first run still trains");
        first.destroyForcibly().waitFor(); // kill -9
        assertEquals(2, code, log);
        assertTrue(log.contains("output_dir " + dir.resolve("out") + " is in use by another mixtune run (pid "
                + first.pid() + ")"), log);

        // The killed run's lock went with its process: the next run takes the directory at once.
        Process again = TrainCommandTest.mixtune(dir, trainArgs(recipe, "--force", "--set", "train.max_steps=1"));
        assertEquals(0, again.waitFor(), Files.readString(dir.resolve("log.txt")));
    }

    /**
     * An input where the run writes its own files (a recipe kept as output_dir/recipe.yaml, model.adapter the earlier
     * run's adapter/) is refused before anything is written, --force included: --force deleted both before. Resuming
     * with output_dir/recipe.yaml, as the changed-recipe refusal advises, still works: it writes no recipe.yaml.
     */
    @Test
    void anInputWhereTheRunWritesIsRefusedEvenWithForce(@TempDir Path dir) throws Exception {
        Path recipe = TrainCommandTest.recipe(dir);
        Path out = dir.resolve("out");
        Path kept = Files.createDirectories(out).resolve("recipe.yaml");
        Files.copy(recipe, kept);
        for (String[] start : List.of(new String[0], new String[] {"--force"})) {
            MixtuneCliTest.Result refused = train(kept, start);
            assertEquals(2, refused.code(), refused.out() + refused.err());
            assertTrue(refused.err().contains("the recipe " + kept + " is output_dir/recipe.yaml, which a run writes"),
                    refused.err());
            assertEquals(1, refused.err().strip().lines().count(), refused.err());
            assertArrayEquals(Files.readAllBytes(recipe), Files.readAllBytes(kept), "the recipe is untouched");
            try (Stream<Path> files = Files.list(out)) {
                assertEquals(List.of("recipe.yaml"), files.map(p -> p.getFileName().toString()).toList());
            }
        }
        Files.delete(kept);

        assertEquals(0, train(recipe, "--set", "train.max_steps=2").code());
        Map<String, byte[]> before = MixtuneCliTest.snapshot(out);
        MixtuneCliTest.Result fromOwnAdapter = train(recipe, "--set", "train.max_steps=2", "--set",
                "model.adapter=" + out.resolve("adapter"), "--force");
        assertEquals(2, fromOwnAdapter.code(), fromOwnAdapter.out() + fromOwnAdapter.err());
        assertTrue(fromOwnAdapter.err().contains("model.adapter " + out.resolve("adapter") + " is output_dir/adapter, "
                + "which a run writes"), fromOwnAdapter.err());
        MixtuneCliTest.assertSameFiles(before, MixtuneCliTest.snapshot(out));

        MixtuneCliTest.Result resumed = train(out.resolve("recipe.yaml"), "--set", "train.max_steps=2", "--resume");
        assertEquals(0, resumed.code(), resumed.out() + resumed.err());
        assertArrayEquals(before.get("recipe.yaml"), Files.readAllBytes(out.resolve("recipe.yaml")));
    }

    /**
     * Killed between the two renames that save a step again (step-N moved aside to step-N.replaced, the new copy not
     * yet in): `--resume RUN/checkpoints/step-N` takes the complete copy, as `--resume` alone does, and the run ends as
     * the uninterrupted one; before, the explicit path was refused as no such checkpoint (exit 2).
     */
    @Test
    void anExplicitResumeOfAStepKilledWhileSavedAgainTakesItsCompleteCopy(@TempDir Path dir) throws Exception {
        Path recipe = TrainCommandTest.recipe(dir);
        Path out = dir.resolve("out");
        assertEquals(0, train(recipe).code());
        byte[] adapter = Files.readAllBytes(out.resolve("adapter/adapter_model.safetensors"));
        Path step2 = out.resolve("checkpoints/step-000002");
        Files.move(step2, step2.resolveSibling("step-000002.replaced"));

        MixtuneCliTest.Result resumed = train(recipe, "--resume", step2.toString());
        assertEquals(0, resumed.code(), resumed.out() + resumed.err());
        assertTrue((resumed.out() + resumed.err()).contains("resuming from its complete copy " + step2 + ".replaced"),
                resumed.out() + resumed.err());
        assertArrayEquals(adapter, Files.readAllBytes(out.resolve("adapter/adapter_model.safetensors")));
    }

    /**
     * A run stopped before its first checkpoint (as a kill -9 leaves it: recipe.yaml, a metrics line) resumes from step
     * 0, after the recipe check, ending as the uninterrupted run; before, --resume failed with exit 1 and only --force
     * went on. A --resume with nothing to continue is an input error (exit 2), naming what it looked at.
     */
    @Test
    void aRunStoppedBeforeItsFirstCheckpointResumesFromStepZero(@TempDir Path dir) throws Exception {
        Path recipe = TrainCommandTest.recipe(dir);
        Path out = dir.resolve("out");
        MixtuneCliTest.Result nothing = train(recipe, "--resume");
        assertEquals(2, nothing.code(), nothing.out() + nothing.err());
        assertTrue(nothing.err().contains("--resume: output_dir " + out + " holds no run to continue"), nothing.err());
        assertFalse(Files.exists(out), "nothing written");
        MixtuneCliTest.Result missing = train(recipe, "--resume", dir.resolve("nope").toString());
        assertEquals(2, missing.code(), missing.out() + missing.err());
        assertTrue(missing.err().contains("--resume " + dir.resolve("nope") + ": no such checkpoint or run directory"),
                missing.err());

        assertEquals(0, train(recipe, "--set", "train.max_steps=2").code());
        byte[] adapter = Files.readAllBytes(out.resolve("adapter/adapter_model.safetensors"));
        List<Double> losses = TrainCommandTest.losses(out.resolve("metrics.jsonl"));
        // What a kill before the first checkpoint leaves: the run's recipe.yaml and first metrics, no checkpoint.
        for (String gone : List.of("adapter", "adapter-ema", "adapter-swa", "adapter-lawa", "checkpoints")) {
            try (Stream<Path> walk = Files.walk(out.resolve(gone))) {
                walk.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
        List<String> firstLine = Files.readAllLines(out.resolve("metrics.jsonl")).subList(0, 1);
        Files.write(out.resolve("metrics.jsonl"), firstLine);

        MixtuneCliTest.Result plain = train(recipe, "--set", "train.max_steps=2");
        assertEquals(2, plain.code(), plain.out() + plain.err());
        assertTrue(plain.err().contains("it stopped before its first checkpoint: --resume runs it from step 0"),
                plain.err());
        MixtuneCliTest.Result changed = train(recipe, "--set", "train.max_steps=2", "--set", "train.lr=1e-3",
                "--resume");
        assertEquals(2, changed.code(), changed.out() + changed.err());
        assertTrue(changed.err().contains("train.lr: 0.003 -> 0.001"), changed.err());

        MixtuneCliTest.Result resumed = train(recipe, "--set", "train.max_steps=2", "--resume");
        assertEquals(0, resumed.code(), resumed.out() + resumed.err());
        assertTrue(resumed.out().contains("no checkpoint in " + out.resolve("checkpoints") + " yet: the run stopped "
                + "before its first; starting it from step 0"), resumed.out());
        assertEquals(losses, TrainCommandTest.losses(out.resolve("metrics.jsonl")));
        assertArrayEquals(adapter, Files.readAllBytes(out.resolve("adapter/adapter_model.safetensors")));
    }

    /**
     * checkpoints/ linked to another disk (as users of HF's Trainer link theirs to scratch space): --force deletes the
     * checkpoints in it but keeps the link, so the new run writes there too. Before, the emptied link was deleted and
     * the new run's checkpoints went to output_dir's own disk.
     */
    @Test
    void forceKeepsALinkedCheckpointsDirectory(@TempDir Path dir) throws Exception {
        Path recipe = TrainCommandTest.recipe(dir);
        Path scratch = Files.createDirectories(dir.resolve("scratch/checkpoints"));
        Path link = Files.createSymbolicLink(Files.createDirectories(dir.resolve("out")).resolve("checkpoints"),
                scratch);
        assertEquals(0, train(recipe, "--set", "train.max_steps=1").code());
        assertTrue(Files.isRegularFile(scratch.resolve("step-000001/trainer_state.json")));
        MixtuneCliTest.Result forced = train(recipe, "--set", "train.max_steps=1", "--force");
        assertEquals(0, forced.code(), forced.err());
        assertTrue(Files.isSymbolicLink(link), "the link stays");
        assertTrue(Files.isRegularFile(scratch.resolve("step-000001/trainer_state.json")), "written through it");
    }

    @Test
    void resumingWithAChangedRecipeIsRefusedNamingEveryChangedKey(@TempDir Path dir) throws Exception {
        Path recipe = TrainCommandTest.recipe(dir);
        assertEquals(0, train(recipe, "--set", "train.max_steps=2").code());
        Path out = dir.resolve("out");
        Map<String, byte[]> before = MixtuneCliTest.snapshot(out);
        Path otherChats = Files.copy(dir.resolve("chats.jsonl"), dir.resolve("other.jsonl"));
        MixtuneCliTest.Result changed = train(recipe, "--set", "train.max_steps=3", "--set", "train.lr=1e-3",
                "--set", "train.seed=7", "--set", "lora.alpha=16", "--set", "data.files=[" + otherChats + "]",
                "--resume");
        assertEquals(2, changed.code(), changed.out() + changed.err());
        for (String key : List.of("train.max_steps: 2 -> 3", "train.lr: 0.003 -> 0.001", "train.seed: 42 -> 7",
                "lora.alpha: 8.0 -> 16.0", "data.files: [\"" + dir.resolve("chats.jsonl") + "\"] -> [\"" + otherChats
                        + "\"]")) {
            assertTrue(changed.err().contains(key), key + " not in: " + changed.err());
        }
        assertTrue(changed.err().contains(out.resolve("recipe.yaml").toAbsolutePath().toString()), changed.err());
        MixtuneCliTest.assertSameFiles(before, MixtuneCliTest.snapshot(out));

        // Keys that cannot change what a resumed run computes may differ; the first recipe.yaml stays as it was.
        MixtuneCliTest.Result cadence = train(recipe, "--set", "train.max_steps=2", "--set", "train.log_every=2",
                "--set", "train.save_every=2", "--set", "train.keep_last=5", "--set", "train.eval_every=1",
                "--resume");
        assertEquals(0, cadence.code(), cadence.err());
        assertArrayEquals(before.get("recipe.yaml"), Files.readAllBytes(out.resolve("recipe.yaml")));

        // The same file names with other contents are other data.
        Path chats = dir.resolve("chats.jsonl");
        Files.writeString(chats, Files.readString(chats).replace("the", "a"));
        MixtuneCliTest.Result edited = train(recipe, "--set", "train.max_steps=2", "--resume");
        assertEquals(2, edited.code(), edited.err());
        assertTrue(edited.err().contains("data file " + chats + " changed since the run started"), edited.err());
    }

    @Test
    void resumeGivenTheRunDirectoryResumesItsNewestCheckpointAndAFileIsNoOutputDir(@TempDir Path dir)
            throws Exception {
        Path recipe = TrainCommandTest.recipe(dir);
        assertEquals(0, train(recipe, "--set", "train.max_steps=2").code());
        Path out = dir.resolve("out");
        MixtuneCliTest.Result resumed = train(recipe, "--set", "train.max_steps=2", "--resume", out.toString());
        assertEquals(0, resumed.code(), resumed.err());
        assertTrue(resumed.out().contains("a run directory, not a checkpoint"), resumed.out());
        assertTrue(resumed.out().contains("resuming from " + out.resolve("checkpoints/step-000002") + " at step 2"),
                resumed.out());
        // It had finished: nothing trains, and the loss line of no step (NaN -> NaN before) is not printed.
        assertTrue(resumed.out().contains("done: the run had already finished at step 2: nothing left to train"),
                resumed.out());
        assertFalse(resumed.out().contains("NaN"), resumed.out());

        Path file = Files.writeString(dir.resolve("a-file"), "not a directory");
        MixtuneCliTest.Result onAFile = train(recipe, "--set", "output_dir=" + file);
        assertEquals(2, onAFile.code(), onAFile.err());
        assertTrue(onAFile.err().contains("output_dir: " + file + " is a file"), onAFile.err());
        assertEquals("not a directory", Files.readString(file));
    }

    /**
     * A preset's base-model in output_dir records which preset wrote it: another preset is refused (by every command
     * that reads it), --force replaces it, and a base-model mixtune did not write is never used or deleted.
     */
    @Test
    void aCachedPresetIsNeverReusedForAnotherPreset(@TempDir Path dir) throws Exception {
        Path recipe = TrainCommandTest.recipe(dir);
        assertEquals(0, train(recipe, "--set", "train.max_steps=1").code());
        Path baseModel = dir.resolve("out/base-model");
        assertTrue(Files.readString(baseModel.resolve("config.json")).contains("\"mixtral\""));

        MixtuneCliTest.Result prepare = MixtuneCliTest.run("data", "prepare", "--recipe", recipe.toString(), "--set",
                "model.preset=tiny-mistral");
        assertEquals(2, prepare.code(), prepare.out() + prepare.err());
        assertTrue(prepare.err().contains(baseModel + " holds the preset tiny-mixtral (seed 0, bf16), but "
                + "model.preset is tiny-mistral (seed 0, bf16)"), prepare.err());

        MixtuneCliTest.Result forced = train(recipe, "--set", "train.max_steps=1", "--set",
                "model.preset=tiny-mistral", "--set", "lora.targets=[q_proj,v_proj]", "--force");
        assertEquals(0, forced.code(), forced.err());
        assertTrue(Files.readString(baseModel.resolve("config.json")).contains("\"mistral\""));
        assertTrue(Files.readString(baseModel.resolve("mixtune-preset.json")).contains("tiny-mistral"));

        // Someone else's model under the name: refused, even with --force, and left as it was.
        Path other = Files.createDirectories(dir.resolve("other/out/base-model"));
        Files.copy(baseModel.resolve("config.json"), other.resolve("config.json"));
        Path otherRecipe = Files.writeString(dir.resolve("other.yaml"), Files.readString(recipe)
                .replace(dir.resolve("out").toString(), dir.resolve("other/out").toString()));
        MixtuneCliTest.Result foreign = train(otherRecipe, "--set", "model.preset=tiny-mistral", "--force");
        assertEquals(2, foreign.code(), foreign.err());
        assertTrue(foreign.err().contains("was not written by mixtune"), foreign.err());
        try (Stream<Path> files = Files.list(other)) {
            assertEquals(List.of("config.json"), files.map(p -> p.getFileName().toString()).toList());
        }
    }
}
