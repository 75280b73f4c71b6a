package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import io.mixtune.model.checkpoint.StagingDirectory;
import io.mixtune.trainer.run.MetricsLog;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.io.TempDir;

/**
 * train.eval_prompts: at each evaluation the prompts answered greedily with the chat template into samples.jsonl and
 * the progress output, each answer the one `mixtune generate --chat` gives on that step's adapter; training itself
 * unchanged by them, and a resumed run writing no step's samples twice.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class EvalSamplesTest {
    static final List<String> PROMPTS = List.of("What is the capital of France?", "Write a \"haiku\" about rain.");

    @TempDir
    static Path shared;
    static Path out;
    static MixtuneCliTest.Result run;

    /** 4 steps of 2 rows on the tiny Mistral, dropout on, evaluated and saved every 2 steps. */
    static Path recipe(Path dir, boolean prompts) throws IOException {
        Path chats = dir.resolve("chats.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/chats.jsonl"))) {
            Files.write(chats, lines.limit(24).toList());
        }
        Path recipe = dir.resolve("recipe.yaml");
        Files.writeString(recipe, """
                model:
                  preset: tiny-mistral
                lora:
                  r: 4
                  alpha: 8
                  dropout: 0.1
                  targets: [q_proj, v_proj, lm_head]
                data:
                  files: [%s]
                  validation_ratio: 0.25
                  max_seq_len: 96
                train:
                  max_steps: 4
                  micro_batch_size: 2
                  lr: 1.0e-2
                  eval_every: 2
                  save_every: 2
                  keep_last: 2
                %soutput_dir: %s
                """.formatted(chats, prompts ? """
                  eval_prompts: ["What is the capital of France?", "Write a \\"haiku\\" about rain."]
                  eval_max_new_tokens: 8
                """ : "", dir.resolve("out")));
        return recipe;
    }

    @BeforeAll
    static void train() throws IOException {
        Path dir = Files.createDirectories(shared.resolve("with"));
        run = MixtuneCliTest.run("train", "--recipe", recipe(dir, true).toString());
        assertEquals(0, run.code(), run.err());
        out = dir.resolve("out");
    }

    @Test
    @Order(1)
    void eachEvaluationsSamplesAreWhatGenerateAnswersOnThatStepsAdapter() {
        List<JsonNode> records = MetricsLog.read(out.resolve("samples.jsonl"));
        assertEquals(List.of(0L, 0L, 2L, 2L, 4L, 4L), records.stream().map(r -> r.get("step").asLong()).toList());
        Path base = out.resolve("base-model");
        for (JsonNode record : records) {
            long step = record.get("step").asLong();
            String prompt = record.get("prompt").asText();
            assertEquals(PROMPTS.get(records.indexOf(record) % 2), prompt);
            List<String> generate = new ArrayList<>(List.of("generate", "--model", base.toString(), "--quantize", "nf4",
                    "--chat", "--prompt", prompt, "--max-new-tokens", "8"));
            if (step == 2) {
                generate.addAll(List.of("--adapter", out.resolve("checkpoints/step-000002/adapter").toString()));
            } else if (step == 4) {
                generate.addAll(List.of("--adapter", out.resolve("adapter").toString()));
            } // step 0: the fresh adapter (PEFT's init, B = 0) changes nothing: the base alone
            MixtuneCliTest.Result generated = MixtuneCliTest.run(generate.toArray(String[]::new));
            assertEquals(0, generated.code(), generated.err());
            String completion = record.get("completion").asText();
            assertEquals(generated.out(), completion + "\n", "step " + step + ", " + prompt);
            assertTrue(run.out().contains("step " + step + ": \"" + prompt.replace("\"", "\\\"") + "\" -> \""
                    + completion.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n").replace("\r", "\\r")
                    .replace("\t", "\\t") + "\""), run.out());
        }
        assertFalse(records.get(0).get("completion").asText().equals(records.get(4).get("completion").asText())
                && records.get(1).get("completion").asText().equals(records.get(5).get("completion").asText()),
                "4 steps at lr 1e-2 change what the model answers");
    }

    /** Generating samples draws no random number and changes no weight: the losses are those of a run without. */
    @Test
    @Order(2)
    void samplesLeaveTrainingAsItIs() throws IOException {
        Path dir = Files.createDirectories(shared.resolve("without"));
        MixtuneCliTest.Result plain = MixtuneCliTest.run("train", "--recipe", recipe(dir, false).toString());
        assertEquals(0, plain.code(), plain.err());
        assertFalse(Files.exists(dir.resolve("out/samples.jsonl")), "no eval_prompts, no samples.jsonl");
        assertFalse(plain.out().contains("\" -> \""), plain.out());
        List<JsonNode> expected = MetricsLog.read(dir.resolve("out/metrics.jsonl"));
        List<JsonNode> actual = MetricsLog.read(out.resolve("metrics.jsonl"));
        assertEquals(expected.size(), actual.size());
        for (int i = 0; i < expected.size(); i++) {
            for (String key : List.of("step", "loss", "grad_norm", "eval_loss")) {
                assertEquals(expected.get(i).path(key), actual.get(i).path(key), key + " of record " + i);
            }
        }
    }

    /** Stage-DPO answers with the policy at the end of each stage, the record naming the stage. */
    @Test
    @Order(2)
    void dpoAnswersWithThePolicyOfEachStage() throws IOException {
        Path dir = Files.createDirectories(shared.resolve("dpo"));
        MixtuneCliTest.Result dpo = MixtuneCliTest.run(TrainDpoTest.train(dir, TrainDpoTest.pairs(dir, 8),
                "dpo.stages=2", "train.max_steps=1", "train.warmup_steps=0", "data.validation_ratio=0",
                "train.eval_prompts=[Hi there]", "train.eval_max_new_tokens=6").toArray(String[]::new));
        assertEquals(0, dpo.code(), dpo.err());
        List<JsonNode> records = MetricsLog.read(dir.resolve("out/samples.jsonl"));
        assertEquals(List.of("1/1", "2/2"), records.stream().map(r -> r.get("step").asLong() + "/"
                + r.get("stage").asInt()).toList());
        for (JsonNode record : records) {
            MixtuneCliTest.Result generated = MixtuneCliTest.run("generate", "--model",
                    dir.resolve("out/base-model").toString(), "--adapter", dir.resolve("out/stage-"
                            + record.get("stage").asInt() + "/adapter").toString(), "--chat", "--prompt", "Hi there",
                    "--max-new-tokens", "6");
            assertEquals(0, generated.code(), generated.err());
            assertEquals(generated.out(), record.get("completion").asText() + "\n", "stage " + record.get("stage"));
        }
    }

    /**
     * As after a kill -9 between step 4's samples and its checkpoint (and a record cut short): --resume continues from
     * step 2 and samples.jsonl ends as the uninterrupted run's, no step twice. Last: it runs on the others' run.
     */
    @Test
    @Order(3)
    void aResumedRunWritesNoStepsSamplesTwice() throws IOException {
        Path recipe = shared.resolve("with/recipe.yaml");
        byte[] whole = Files.readAllBytes(out.resolve("samples.jsonl"));
        StagingDirectory.deleteRecursively(out.resolve("checkpoints/step-000004"));
        Files.writeString(out.resolve("samples.jsonl"), "{\"step\": 4, \"prompt\": \"What is",
                StandardCharsets.UTF_8, StandardOpenOption.APPEND);

        // The keys may change on --resume (they change no weight): here the run's recipe.yaml lacks them, as a run
        // started by a mixtune without them does.
        Path resolved = out.resolve("recipe.yaml");
        ObjectMapper yaml = new ObjectMapper(new YAMLFactory());
        ObjectNode tree = (ObjectNode) yaml.readTree(resolved.toFile());
        ((ObjectNode) tree.get("train")).remove(List.of("eval_prompts", "eval_max_new_tokens"));
        yaml.writeValue(resolved.toFile(), tree);
        MixtuneCliTest.Result resumed = MixtuneCliTest.run("train", "--recipe", recipe.toString(), "--resume");
        assertEquals(0, resumed.code(), resumed.err());
        assertTrue(resumed.out().contains("step 4: \"What is the capital of France?\" -> "), resumed.out());
        assertFalse(resumed.out().contains("step 2: \"What is"), "step 2's samples were written before its checkpoint");
        assertEquals(new String(whole, StandardCharsets.UTF_8),
                Files.readString(out.resolve("samples.jsonl"), StandardCharsets.UTF_8));
    }
}
