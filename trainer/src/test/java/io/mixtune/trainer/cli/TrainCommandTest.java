package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.template.MistralTemplate;
import io.mixtune.trainer.run.MetricsLog;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `mixtune train` end to end on the tiny Mixtral: the outputs a run leaves, and resume after a kill -9 giving the
 * very losses of a run never stopped.
 */
class TrainCommandTest {
    @TempDir
    static Path shared;

    /**
     * A short run: 12 optimizer steps of 2 x 2 rows of 128 tokens over 24 sample chats, dropout on, EMA, SWA and
     * LaWA kept.
     */
    static Path recipe(Path dir) throws IOException {
        Path chats = dir.resolve("chats.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/chats.jsonl"))) {
            Files.write(chats, lines.limit(24).toList());
        }
        Path recipe = dir.resolve("recipe.yaml");
        Files.writeString(recipe, """
                model:
                  preset: tiny-mixtral
                lora:
                  r: 4
                  alpha: 8
                  dropout: 0.1
                  targets: [q_proj, v_proj, w1, w2, w3, lm_head]
                data:
                  files: [%s]
                  validation_ratio: 0.25
                  max_seq_len: 128
                train:
                  max_steps: 12
                  micro_batch_size: 2
                  gradient_accumulation: 2
                  lr: 3.0e-3
                  warmup_steps: 2
                  weight_decay: 0.01
                  save_every: 3
                  keep_last: 2
                  eval_every: 6
                averaging:
                  ema_decay: 0.9
                  swa_start: 0.5
                  swa_every: 2
                  lawa_k: 3
                  lawa_every: 2
                output_dir: %s
                """.formatted(chats, dir.resolve("out")));
        return recipe;
    }

    static List<Double> losses(Path metrics) {
        List<Double> losses = new ArrayList<>();
        for (JsonNode record : MetricsLog.read(metrics)) {
            if (record.has("loss")) {
                assertEquals(losses.size() + 1, record.get("step").asInt(), "one record per step, in order");
                losses.add(record.get("loss").asDouble());
            }
        }
        return losses;
    }

    @Test
    void aRunWritesAdapterMetricsPlotRecipeAndPrunedCheckpoints() throws Exception {
        Path dir = Files.createDirectories(shared.resolve("whole"));
        MixtuneCliTest.Result run = MixtuneCliTest.run("train", "--recipe", recipe(dir).toString());
        assertEquals(0, run.code(), run.err());
        Path out = dir.resolve("out");
        assertTrue(Files.isRegularFile(out.resolve("adapter/adapter_config.json")));
        assertTrue(Files.isRegularFile(out.resolve("adapter/adapter_model.safetensors")));
        // data.template auto on a preset is mistral; the adapter carries it for apply_chat_template
        for (String adapter : List.of("adapter", "adapter-ema", "checkpoints/step-000012/adapter",
                "checkpoints/step-000012/adapter-ema")) {
            JsonNode tokenizerConfig = new ObjectMapper().readTree(out.resolve(adapter + "/tokenizer_config.json").toFile());
            assertEquals(MistralTemplate.JINJA, tokenizerConfig.get("chat_template").asText(), adapter);
            assertTrue(Files.isRegularFile(out.resolve(adapter + "/tokenizer.json")), adapter);
        }
        assertTrue(Files.size(out.resolve("loss.png")) > 1000);
        assertTrue(Files.readString(out.resolve("recipe.yaml")).contains("max_steps: 12"));
        try (Stream<Path> checkpoints = Files.list(out.resolve("checkpoints"))) {
            assertEquals(List.of("step-000009", "step-000012"),
                    checkpoints.map(p -> p.getFileName().toString()).sorted().toList(), "keep_last 2");
        }
        List<Double> losses = losses(out.resolve("metrics.jsonl"));
        assertEquals(12, losses.size());
        List<JsonNode> evals = MetricsLog.read(out.resolve("metrics.jsonl")).stream()
                .filter(r -> r.has("eval_loss")).toList();
        assertEquals(List.of(0, 6, 12), evals.stream().map(r -> r.get("step").asInt()).toList());
        double before = evals.get(0).get("eval_loss").asDouble();
        double after = evals.get(2).get("eval_loss").asDouble();
        System.out.printf("eval loss %.4f -> %.4f (%.1f%% lower)%n", before, after, 100 * (1 - after / before));
        assertTrue(after < before, "12 steps lower the validation loss: " + before + " -> " + after);
        assertTrue(run.out().contains("done: 12 steps"), run.out());
    }

    /** The uninterrupted run that stopped runs must resume to, in a process of its own; made once. */
    private static synchronized Path reference() throws Exception {
        Path whole = shared.resolve("reference");
        if (!Files.exists(whole.resolve("out/adapter"))) {
            Files.createDirectories(whole);
            assertEquals(0, mixtune(whole, "train", "--recipe", recipe(whole).toString()).waitFor());
        }
        return whole;
    }

    @Test
    void resumingAfterAKillGivesTheLossesOfTheUninterruptedRun() throws Exception {
        // Every run in a process of its own, as users run them: the reference, the killed run and its resumption.
        Path whole = reference();
        List<Double> expected = losses(whole.resolve("out/metrics.jsonl"));

        Path killed = Files.createDirectories(shared.resolve("killed"));
        Path recipe = recipe(killed);
        Path checkpoint = killed.resolve("out/checkpoints/step-000003");
        Process process = mixtune(killed, "train", "--recipe", recipe.toString());
        long deadline = System.nanoTime() + 120_000_000_000L;
        while (!Files.exists(checkpoint) && process.isAlive() && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        process.destroyForcibly().waitFor(); // kill -9: no shutdown hook, no cleanup
        assertFalse(Files.exists(killed.resolve("out/adapter")), "the run was killed before its end: "
                + Files.readString(killed.resolve("log.txt")));

        assertEquals(0, mixtune(killed, "train", "--recipe", recipe.toString(), "--resume").waitFor());
        assertTrue(Files.readString(killed.resolve("log.txt")).contains("resuming from"));
        List<Double> actual = losses(killed.resolve("out/metrics.jsonl"));
        assertEquals(expected.size(), actual.size());
        for (int i = 0; i < expected.size(); i++) {
            assertEquals(expected.get(i), actual.get(i), 1e-6, "loss of step " + (i + 1));
        }
        // The averages went on from the checkpoint too: the final adapters are the uninterrupted run's, byte for byte.
        for (String adapter : List.of("adapter", "adapter-ema", "adapter-swa", "adapter-lawa")) {
            Path file = Path.of(adapter, "adapter_model.safetensors");
            assertTrue(java.util.Arrays.equals(Files.readAllBytes(whole.resolve("out").resolve(file)),
                    Files.readAllBytes(killed.resolve("out").resolve(file))), adapter + " differs after resuming");
        }
    }

    /**
     * kill -9 while a checkpoint is being written (step 6's .partial folder), then again while the final adapters are
     * written (adapter*.partial), each followed by --resume: the checkpoint before stays whole, the partial folders
     * are gone at the end, and the metrics and the four adapters are the uninterrupted run's, byte for byte. A kill
     * that misses its moment (a fast write) still has to resume exactly; the log says which moments were hit.
     */
    @Test
    void killsWhileACheckpointAndTheAdaptersAreWrittenResumeExactly() throws Exception {
        Path whole = reference();
        Path dir = Files.createDirectories(shared.resolve("killed-writing"));
        Path recipe = recipe(dir);
        Path out = dir.resolve("out");
        List<String> hit = new ArrayList<>();
        for (String moment : List.of("checkpoints/step-000006.partial", "adapter.partial", "")) {
            List<String> args = new ArrayList<>(List.of("train", "--recipe", recipe.toString()));
            if (!hit.isEmpty() || moment.isEmpty()) {
                args.add("--resume");
            }
            Process process = mixtune(dir, args.toArray(String[]::new));
            if (moment.isEmpty()) {
                assertEquals(0, process.waitFor(), Files.readString(dir.resolve("log.txt")));
                break;
            }
            Path partial = out.resolve(moment);
            long deadline = System.nanoTime() + 180_000_000_000L;
            while (!Files.exists(partial) && process.isAlive() && System.nanoTime() < deadline) {
                Thread.sleep(1);
            }
            process.destroyForcibly().waitFor();
            hit.add(moment + (Files.exists(partial) ? " hit" : " missed"));
            if (moment.startsWith("checkpoints") && Files.exists(partial)) {
                assertEquals(null, io.mixtune.trainer.run.TrainingCheckpoint.verify(
                        out.resolve("checkpoints/step-000003")), "the checkpoint before is whole");
            }
        }
        System.out.println("kill -9 moments: " + hit);
        assertEquals(losses(whole.resolve("out/metrics.jsonl")), losses(out.resolve("metrics.jsonl")));
        for (String adapter : List.of("adapter", "adapter-ema", "adapter-swa", "adapter-lawa")) {
            Path file = Path.of(adapter, "adapter_model.safetensors");
            assertTrue(java.util.Arrays.equals(Files.readAllBytes(whole.resolve("out").resolve(file)),
                    Files.readAllBytes(out.resolve(file))), adapter + " differs after resuming");
        }
        try (Stream<Path> walk = Files.walk(out)) {
            assertEquals(List.of(), walk.map(Path::toString).filter(name -> name.endsWith(".partial")).toList());
        }
    }

    /**
     * Ctrl-C or a scheduler's SIGTERM: the run stops after the step in progress with a checkpoint of that step (not
     * the last save_every one), exits with 128 + the signal's number, and resumes to the uninterrupted run. Before,
     * the JVM's exit ran libtorch's destructors under the step's backward: SIGSEGV, and an hs_err file in the
     * working directory.
     */
    @Test
    void aSigtermStopsAfterTheStepWithItsCheckpointAndResumesExactly() throws Exception {
        List<Double> expected = losses(reference().resolve("out/metrics.jsonl"));
        Path dir = Files.createDirectories(shared.resolve("sigterm"));
        Path recipe = recipe(dir);
        Path metrics = dir.resolve("out/metrics.jsonl");
        Process process = mixtune(dir, "train", "--recipe", recipe.toString());
        long deadline = System.nanoTime() + 120_000_000_000L;
        while ((!Files.exists(metrics) || losses(metrics).size() < 4) && process.isAlive()
                && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        process.destroy(); // SIGTERM, in the middle of step 5 or so
        assertEquals(128 + 15, process.waitFor(), Files.readString(dir.resolve("log.txt")));
        String log = Files.readString(dir.resolve("log.txt"));
        int stoppedAt = losses(metrics).size();
        assertTrue(stoppedAt >= 4 && stoppedAt < 12, log);
        Path checkpoint = dir.resolve("out/checkpoints").resolve(String.format("step-%06d", stoppedAt));
        assertTrue(log.contains("stopped by SIGTERM at step " + stoppedAt + "; checkpoint " + checkpoint), log);
        assertTrue(Files.isRegularFile(checkpoint.resolve("trainer_state.safetensors")), log);
        assertFalse(Files.exists(dir.resolve("out/adapter")));
        try (Stream<Path> files = Files.list(Path.of(""))) {
            assertEquals(List.of(), files.map(p -> p.getFileName().toString())
                    .filter(name -> name.equals("hs_err_pid" + process.pid() + ".log")).toList(), "no JVM crash");
        }

        assertEquals(0, mixtune(dir, "train", "--recipe", recipe.toString(), "--resume").waitFor());
        List<Double> actual = losses(metrics);
        assertEquals(expected.size(), actual.size());
        for (int i = 0; i < expected.size(); i++) {
            assertEquals(expected.get(i), actual.get(i), 1e-6, "loss of step " + (i + 1));
        }
    }

    @Test
    void aDamagedCheckpointIsNamedAndTheOneBeforeItUsed() throws Exception {
        Path dir = Files.createDirectories(shared.resolve("damaged"));
        Path recipe = recipe(dir);
        assertEquals(0, MixtuneCliTest.run("train", "--recipe", recipe.toString(), "--set", "train.max_steps=6",
                "--set", "train.keep_last=3").code());
        Path newest = dir.resolve("out/checkpoints/step-000006/trainer_state.safetensors");
        try (RandomAccessFile file = new RandomAccessFile(newest.toFile(), "rw")) {
            file.seek(file.length() - 5);
            file.write(0x7f);
        }
        MixtuneCliTest.Result resumed = MixtuneCliTest.run("train", "--recipe", recipe.toString(), "--set",
                "train.max_steps=6", "--set", "train.keep_last=3", "--resume");
        assertEquals(0, resumed.code(), resumed.err());
        assertTrue(resumed.out().contains("warning: skipping checkpoint " + newest.getParent()
                + ": trainer_state.safetensors does not match its SHA-256"), resumed.out());
        assertTrue(resumed.out().contains("step-000003 at step 3"), resumed.out());

        MixtuneCliTest.Result explicit = MixtuneCliTest.run("train", "--recipe", recipe.toString(), "--resume",
                Files.createDirectories(dir.resolve("out/checkpoints/nothing")).toString());
        assertEquals(2, explicit.code(), explicit.err()); // an input to fix, as every bad --resume DIR
        assertTrue(explicit.err().contains("is not a complete checkpoint"), explicit.err());
    }

    /**
     * compute_dtype fp16 (slow on a CPU, so 4 short steps): the steps run at GradScaler's initial loss scale, which is
     * in metrics.jsonl and in the checkpoints, and resuming from step 2 gives the losses of the whole run.
     */
    @Test
    void aFloat16RunRecordsItsLossScaleAndResumesExactly() throws Exception {
        Path dir = Files.createDirectories(shared.resolve("fp16"));
        String[] overrides = {"--set", "model.compute_dtype=fp16", "--set", "train.max_steps=4", "--set",
                "train.save_every=2", "--set", "train.micro_batch_size=1", "--set", "train.gradient_accumulation=1",
                "--set", "data.max_seq_len=64", "--set", "train.eval_every=0"};
        List<String> args = new ArrayList<>(List.of("train", "--recipe", recipe(dir).toString()));
        args.addAll(List.of(overrides));
        MixtuneCliTest.Result run = MixtuneCliTest.run(args.toArray(String[]::new));
        assertEquals(0, run.code(), run.err());
        assertTrue(run.out().contains("compute in fp16 with dynamic loss scaling"), run.out());
        Path metrics = dir.resolve("out/metrics.jsonl");
        List<Double> expected = losses(metrics);
        for (JsonNode record : MetricsLog.read(metrics)) {
            if (record.has("loss")) {
                assertEquals(65536.0, record.get("loss_scale").asDouble(), record.toString());
                assertFalse(record.get("skipped").asBoolean(), record.toString());
            }
        }
        assertTrue(Files.readString(dir.resolve("out/checkpoints/step-000002/trainer_state.json"))
                .contains("\"loss_scale\" : 65536.0"));

        args.addAll(List.of("--resume", dir.resolve("out/checkpoints/step-000002").toString()));
        MixtuneCliTest.Result resumed = MixtuneCliTest.run(args.toArray(String[]::new));
        assertEquals(0, resumed.code(), resumed.err());
        List<Double> actual = losses(metrics);
        assertEquals(expected.size(), actual.size());
        for (int i = 0; i < expected.size(); i++) {
            assertEquals(expected.get(i), actual.get(i), 1e-6, "loss of step " + (i + 1));
        }
    }

    /** `mixtune ARGS` in a new JVM, its output in DIR/log.txt (appended). */
    static Process mixtune(Path dir, String... args) throws IOException {
        List<String> command = new ArrayList<>(List.of(ProcessHandle.current().info().command().orElse("java"),
                "-Dai.djl.offline=true", "-ea:io.mixtune...", "-cp", System.getProperty("java.class.path"),
                Mixtune.class.getName()));
        command.addAll(List.of(args));
        return new ProcessBuilder(command).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(dir.resolve("log.txt").toFile())).start();
    }
}
