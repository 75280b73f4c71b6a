package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.function.Function;

/**
 * A `mixtune train` run killed (kill -9) once a checkpoint is written, a resume with a changed key refused, and the
 * resume itself, which must give the run that never stopped: the same figures within 1e-6 and the adapter's bytes.
 */
final class KilledRun {
    private KilledRun() {}

    /**
     * @param dir the killed run's folder (its log.txt and out/)
     * @param args its train command, output_dir under dir/out
     * @param checkpoint the checkpoint after which it is killed, such as "step-000006"
     * @param changedKey a --set that changes a key, refused on --resume with {@code refusal} on stderr
     * @param expected the uninterrupted run's figures (step and name per line, {@link TrainDpoTest#value})
     * @param wholeOut the uninterrupted run's output_dir
     * @param figures the figures of a metrics.jsonl
     */
    static void resumesToTheUninterruptedRun(String what, Path dir, List<String> args, String checkpoint,
            String changedKey, String refusal, List<String> expected, Path wholeOut,
            Function<Path, List<String>> figures) throws Exception {
        Process process = TrainCommandTest.mixtune(dir, args.toArray(String[]::new));
        Path written = dir.resolve("out/checkpoints").resolve(checkpoint);
        long deadline = System.nanoTime() + 180_000_000_000L;
        while (!Files.exists(written) && process.isAlive() && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        process.destroyForcibly().waitFor();
        assertFalse(Files.exists(dir.resolve("out/adapter/adapter_model.safetensors")), "killed before the end: "
                + Files.readString(dir.resolve("log.txt")));

        List<String> changed = new ArrayList<>(args);
        changed.addAll(List.of("--resume", "--set", changedKey));
        MixtuneCliTest.Result refused = MixtuneCliTest.run(changed.toArray(String[]::new));
        assertEquals(2, refused.code(), refused.out() + refused.err());
        assertTrue(refused.err().contains(refusal), refused.err());

        List<String> resume = new ArrayList<>(args);
        resume.add("--resume");
        assertEquals(0, TrainCommandTest.mixtune(dir, resume.toArray(String[]::new)).waitFor());
        assertTrue(Files.readString(dir.resolve("log.txt")).contains("resuming from"));
        Path expectedMetrics = wholeOut.resolve("metrics.jsonl");
        assertEquals(expected, figures.apply(dir.resolve("out/metrics.jsonl")));
        double worst = 0;
        for (String line : expected) {
            double want = TrainDpoTest.value(expectedMetrics, line);
            double got = TrainDpoTest.value(dir.resolve("out/metrics.jsonl"), line);
            worst = Math.max(worst, Math.abs(want - got));
            assertEquals(want, got, 1e-6, line);
        }
        System.out.printf(Locale.ROOT, "resumed %s run: %d figures, largest difference %.2e%n", what, expected.size(),
                worst);
        Path adapter = Path.of("adapter", "adapter_model.safetensors");
        assertArrayEquals(Files.readAllBytes(wholeOut.resolve(adapter)),
                Files.readAllBytes(dir.resolve("out").resolve(adapter)), "adapter differs after resuming");
    }
}
