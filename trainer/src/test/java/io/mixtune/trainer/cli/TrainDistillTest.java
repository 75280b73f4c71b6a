package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.trainer.Training;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingResult;
import io.mixtune.trainer.run.MetricsLog;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `mixtune train` with train.method distillation (recipes/quickstart-distill.yaml: the tiny Mistral learning from the
 * tiny Mixtral) on the 10 bundled prompt-completion records: half the micro-batches on the student's own completions,
 * a run killed after a checkpoint and resumed equals the run that never stopped (every loss and evaluation, the
 * adapter the same bytes), a changed distillation key is refused on resume, and validate refuses a teacher whose
 * tokenizer differs, naming both files, and TRL keys mixtune does not take.
 */
class TrainDistillTest {
    private static final Path QUICKSTART = Path.of("../recipes/quickstart-distill.yaml");
    private static final ObjectMapper JSON = new ObjectMapper();

    private static List<String> train(Path dir, String... sets) {
        List<String> args = new ArrayList<>(List.of("train", "--recipe", QUICKSTART.toString(), "--set",
                "data.files=[../data/samples/prompt-completion.jsonl]", "--set", "output_dir=" + dir.resolve("out")));
        for (String set : sets) {
            args.addAll(List.of("--set", set));
        }
        return args;
    }

    /**
     * 8 training records (2 held out), micro-batches of 4 over 2 epochs (4 steps) with LoRA dropout and lmbda 0.5,
     * killed (kill -9) after the checkpoint of step 2 and resumed.
     */
    @Test
    void resumingAfterAKillGivesTheUninterruptedRunAndAChangedKeyIsRefused(@TempDir Path shared) throws Exception {
        String[] sets = {"data.validation_ratio=0.2", "train.micro_batch_size=4", "train.max_steps=null",
                "train.epochs=2", "train.save_every=1", "train.keep_last=10", "train.eval_every=2",
                "lora.dropout=0.1", "data.max_seq_len=48", "distillation.lmbda=0.5",
                "distillation.max_completion_length=3", "distillation.beta=0.5", "distillation.temperature=0.5"};
        Path whole = Files.createDirectories(shared.resolve("reference"));
        List<String> args = train(whole, sets);
        assertEquals(0, TrainCommandTest.mixtune(whole, args.toArray(String[]::new)).waitFor(),
                Files.readString(whole.resolve("log.txt")));
        Path expectedMetrics = whole.resolve("out/metrics.jsonl");
        List<String> expected = figures(expectedMetrics);
        assertTrue(expected.contains("4 loss") && expected.contains("2 eval_loss"), expected.toString());
        List<JsonNode> records = MetricsLog.read(expectedMetrics);
        assertTrue(records.stream().anyMatch(r -> r.has("completions/mean_length")), "an on-policy step");
        assertTrue(records.stream().anyMatch(r -> r.has("on_policy") && r.get("on_policy").asDouble() < 1),
                "an off-policy micro-batch");

        Path killed = Files.createDirectories(shared.resolve("killed"));
        KilledRun.resumesToTheUninterruptedRun("distillation", killed, train(killed, sets), "step-000002",
                "distillation.beta=0.3", "distillation.beta: 0.5 -> 0.3", expected, whole.resolve("out"),
                TrainDistillTest::figures);
    }

    /** The Java API (Training.load, as `mixtune train --recipe --set`): an off-policy run on the data's completions. */
    @Test
    void anOffPolicyRunThroughTheJavaApi(@TempDir Path dir) {
        List<Map<String, Object>> steps = new ArrayList<>();
        TrainingResult result = Training.load(QUICKSTART, "data.files=[../data/samples/prompt-completion.jsonl]",
                "output_dir=" + dir.resolve("out"), "distillation.lmbda=0", "train.max_steps=2",
                "data.validation_ratio=0.2", "data.max_seq_len=48").listener(new TrainingListener() {
                    @Override
                    public void onStep(StepEnded step) {
                        steps.add(step.metrics());
                    }
                }).run();
        assertEquals(2, result.steps());
        assertTrue(Files.isRegularFile(result.adapterDir().resolve("adapter_model.safetensors")));
        for (Map<String, Object> metrics : steps) {
            assertEquals(0.0, ((Number) metrics.get("on_policy")).doubleValue(), metrics.toString());
            assertFalse(metrics.containsKey("completions/mean_length"), metrics.toString());
            assertTrue(((Number) metrics.get("loss")).doubleValue() > 0, metrics.toString());
        }
        assertTrue(result.stages().get(0).lastEvaluation().containsKey("eval_loss"));
    }

    @Test
    void validateRefusesATeacherOfAnotherTokenizerNamingBothFilesAndTrlKeysNotOffered(@TempDir Path dir)
            throws Exception {
        Path teacher = Files.createDirectories(dir.resolve("teacher"));
        Files.copy(Path.of("../configs/models/tiny-mixtral.json"), teacher.resolve("config.json"));
        ObjectNode tokenizer;
        try (var in = ModelPreset.class.getClassLoader().getResourceAsStream(ModelPreset.MISTRAL_V1_TOKENIZER)) {
            tokenizer = (ObjectNode) JSON.readTree(in);
        }
        ObjectNode vocab = (ObjectNode) tokenizer.get("model").get("vocab");
        vocab.set("▁zebra", vocab.remove("▁the")); // one piece renamed: same size, other ids
        JSON.writeValue(teacher.resolve("tokenizer.json").toFile(), tokenizer);
        MixtuneCliTest.Result result = MixtuneCliTest.run("validate", "--recipe", QUICKSTART.toString(), "--set",
                "distillation.teacher_preset=null", "--set", "distillation.teacher_model_name_or_path=" + teacher);
        assertEquals(2, result.code(), result.out());
        assertTrue(result.err().contains("distillation.teacher_model_name_or_path") && result.err().contains(
                teacher.resolve("tokenizer.json").toString()) && result.err().contains(
                ModelPreset.MISTRAL_V1_TOKENIZER), result.err());

        MixtuneCliTest.Result ok = MixtuneCliTest.run("validate", "--recipe", QUICKSTART.toString());
        assertEquals(0, ok.code(), ok.err());
        assertTrue(ok.out().contains("shares the student's tokenizer"), ok.out());

        MixtuneCliTest.Result vllm = MixtuneCliTest.run("validate", "--recipe", QUICKSTART.toString(), "--set",
                "distillation.use_vllm=true");
        assertEquals(2, vllm.code(), vllm.out());
        assertTrue(vllm.err().contains("distillation.use_vllm") && vllm.err().contains("not offered"), vllm.err());
        MixtuneCliTest.Result sft = MixtuneCliTest.run("validate", "--recipe", QUICKSTART.toString(), "--set",
                "train.method=sft");
        assertEquals(2, sft.code(), sft.out());
        assertTrue(sft.err().contains("distillation.teacher_preset: names a teacher"), sft.err());
    }

    private static List<String> figures(Path metrics) {
        List<String> lines = new ArrayList<>();
        for (JsonNode record : MetricsLog.read(metrics)) {
            for (String name : List.of("loss", "entropy", "eval_loss", "eval_entropy", "completions/mean_length")) {
                if (record.has(name)) {
                    lines.add(record.get("step").asInt() + " " + name);
                }
            }
        }
        return lines;
    }
}
