package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `mixtune merge` and `merge-adapter` never delete or write into an input, and never delete what they did not write:
 * an --out that is, holds or lies inside an input is refused (exit 2) even with --force; merge-adapter refuses a
 * non-empty --out without --force and with it replaces only its own files; a merge killed half way leaves a staging
 * directory that the next merge into the same --out deletes, while a running merge's stays.
 */
class MergeSafetyTest {
    private static final Path GOLDEN = Path.of("../merging/src/test/resources/golden/checkpoints").toAbsolutePath()
            .normalize();

    /** Copies of the golden checkpoints m0 and m1 under {@code dir}. */
    private static List<Path> inputs(Path dir) throws IOException {
        List<Path> copies = new java.util.ArrayList<>();
        for (String name : List.of("m0", "m1")) {
            Path copy = Files.createDirectories(dir.resolve(name));
            try (Stream<Path> files = Files.list(GOLDEN.resolve(name))) {
                for (Path file : files.toList()) {
                    Files.copy(file, copy.resolve(file.getFileName()));
                }
            }
            copies.add(copy);
        }
        return copies;
    }

    private static MixtuneCliTest.Result linear(List<Path> inputs, Path out, String... extra) {
        List<String> args = new java.util.ArrayList<>(List.of("merge", "--method", "linear", "--inputs",
                inputs.get(0) + "," + inputs.get(1), "--out", out.toString()));
        args.addAll(List.of(extra));
        return MixtuneCliTest.run(args.toArray(String[]::new));
    }

    @Test
    void mergeRefusesAnOutThatIsHoldsOrLiesInsideAnInputEvenWithForce(@TempDir Path dir) throws Exception {
        Path work = Files.createDirectories(dir.resolve("work"));
        List<Path> inputs = inputs(work);
        Map<String, byte[]> before = MixtuneCliTest.snapshot(work);
        for (Path out : List.of(work, inputs.get(0), inputs.get(1).resolve("merged"))) {
            MixtuneCliTest.Result merge = linear(inputs, out, "--force");
            assertEquals(2, merge.code(), out + ": " + merge.out() + merge.err());
            assertTrue(merge.err().contains("out " + out) && merge.err().contains("the input "), merge.err());
            MixtuneCliTest.assertSameFiles(before, MixtuneCliTest.snapshot(work));
        }
        Path yaml = Files.writeString(dir.resolve("merge.yaml"), "merge_method: linear\nmodels:\n  - model: "
                + inputs.get(0) + "\n  - model: " + inputs.get(1) + "\nout: " + work + "\n");
        MixtuneCliTest.Result fromFile = MixtuneCliTest.run("merge", "--config", yaml.toString(), "--force");
        assertEquals(2, fromFile.code(), fromFile.err());
        assertTrue(fromFile.err().contains("contains the input " + inputs.get(0)), fromFile.err());
        MixtuneCliTest.assertSameFiles(before, MixtuneCliTest.snapshot(work));
    }

    /**
     * A merge killed after creating its staging directory leaves OUT.tmp-PID-N, exactly as here with the pid of a
     * process that has ended; the next merge into OUT deletes it. The staging directory of a merge still running (this
     * test's own pid), and a directory merely named like one, stay.
     */
    @Test
    void aKilledMergesStagingDirectoryIsDeletedByTheNextMerge(@TempDir Path dir) throws Exception {
        List<Path> inputs = inputs(Files.createDirectories(dir.resolve("inputs")));
        Process ended = new ProcessBuilder("true").start();
        ended.waitFor();
        Path out = dir.resolve("merged");
        Path abandoned = Files.createDirectories(dir.resolve("merged.tmp-" + ended.pid() + "-1f2e3d"));
        Files.writeString(abandoned.resolve("model.safetensors"), "half written");
        Path running = Files.createDirectories(dir.resolve("merged.tmp-" + ProcessHandle.current().pid() + "-4c5b"));
        Path lookalike = Files.createDirectories(dir.resolve("merged.tmp-notes"));

        MixtuneCliTest.Result merge = linear(inputs, out);
        assertEquals(0, merge.code(), merge.err());
        assertFalse(Files.exists(abandoned), "a killed merge's leftover is deleted");
        assertTrue(Files.isDirectory(running) && Files.isDirectory(lookalike));
        try (Stream<Path> siblings = Files.list(dir)) {
            assertEquals(Stream.of("inputs", "merged", lookalike.getFileName().toString(),
                    running.getFileName().toString()).sorted().toList(), siblings.map(p -> p.getFileName().toString()).sorted().toList());
        }
    }

    @Test
    void mergeAdapterNeverDeletesWhatItDidNotWrite(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("tiny");
        assertEquals(0, MixtuneCliTest.run("init-model", "--preset", "tiny-mistral", "--out", model.toString())
                .code());
        Path adapter = dir.resolve("adapter");
        assertEquals(0, MixtuneCliTest.run("init-adapter", "--model", model.toString(), "--out", adapter.toString(),
                "--r", "2", "--targets", "q_proj", "--init", "random").code());
        Path out = Files.createDirectories(dir.resolve("out"));
        Files.writeString(out.resolve("notes.txt"), "mine");
        byte[] someoneElses = Files.readAllBytes(model.resolve("model.safetensors"));
        Files.write(out.resolve("model.safetensors"), someoneElses);

        MixtuneCliTest.Result refused = MixtuneCliTest.run("merge-adapter", "--model", model.toString(), "--adapter",
                adapter.toString(), "--out", out.toString());
        assertEquals(2, refused.code(), refused.err());
        assertTrue(refused.err().contains("exists and is not empty") && refused.err().contains("--force"),
                refused.err());
        assertArrayEquals(someoneElses, Files.readAllBytes(out.resolve("model.safetensors")));

        MixtuneCliTest.Result forced = MixtuneCliTest.run("merge-adapter", "--model", model.toString(), "--adapter",
                adapter.toString(), "--out", out.toString(), "--force");
        assertEquals(0, forced.code(), forced.err());
        assertEquals("mine", Files.readString(out.resolve("notes.txt")));
        assertFalse(java.util.Arrays.equals(someoneElses, Files.readAllBytes(out.resolve("model.safetensors"))),
                "the merged weights replace the file of the name merging writes");

        Map<String, byte[]> inputsBefore = MixtuneCliTest.snapshot(dir.resolve("tiny"));
        for (Path into : List.of(model, dir, adapter.resolve("merged"))) {
            MixtuneCliTest.Result overlap = MixtuneCliTest.run("merge-adapter", "--model", model.toString(),
                    "--adapter", adapter.toString(), "--out", into.toString(), "--force");
            assertEquals(2, overlap.code(), into + ": " + overlap.err());
            assertTrue(overlap.err().contains("the input "), overlap.err());
        }
        MixtuneCliTest.assertSameFiles(inputsBefore, MixtuneCliTest.snapshot(dir.resolve("tiny")));
        assertFalse(Files.exists(adapter.resolve("merged")));
    }
}
