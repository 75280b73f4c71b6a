package io.mixtune.trainer.distill;

import static io.mixtune.trainer.dpo.DpoGoldenTest.close;
import static io.mixtune.trainer.dpo.DpoGoldenTest.iterable;
import static io.mixtune.trainer.dpo.DpoGoldenTest.longs1;
import static org.junit.jupiter.api.Assertions.assertEquals;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.training.GradientCollector;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Scalars;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.dpo.DpoGoldenTest;
import io.mixtune.trainer.dpo.PreferenceBatch;
import io.mixtune.trainer.run.TrainingBatch;
import io.mixtune.trainer.run.TrainingModel;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Distillation against TRL 1.13 (interop/make_distill_goldens.py; interop/GOLDENS.md, "Distillation"): the
 * generalized JSD of DistillationTrainer's own _chunked_divergence_loss on fixed logits (beta 0, 0.3, 0.5, 1 at
 * temperatures 1, 2 and 0.7, masked to completion tokens, reduced over the micro-batch's or a step's tokens), and one
 * forward/backward of DistillationTrainer._compute_loss with the tiny Mistral of the SFT golden as the student and the
 * tiny Mixtral with its adapter as the teacher.
 */
class DistillGoldenTest {
    private static final double RTOL = 1e-5;
    private static final ObjectMapper JSON = new ObjectMapper();

    private static Path golden(String name) {
        try {
            return Path.of(DistillGoldenTest.class.getResource("/golden/distill/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    @Test
    void lossGradientAndEntropyOnFixedLogitsEqualTrlDistillationTrainer() throws IOException {
        JsonNode golden = JSON.readTree(golden("losses.json").toFile());
        float[] student = flatten(golden.get("student_logits"));
        float[] teacher = flatten(golden.get("teacher_logits"));
        JsonNode mask = golden.get("completion_mask");
        int rows = mask.size();
        int width = mask.get(0).size();
        int vocab = student.length / (rows * width);
        List<Long> kept = new ArrayList<>();
        for (int r = 0; r < rows; r++) {
            for (int t = 0; t < width; t++) {
                if (mask.get(r).get(t).intValue() != 0) {
                    kept.add((long) r * width + t);
                }
            }
        }
        long[] indices = kept.stream().mapToLong(Long::longValue).toArray();
        int compared = 0;
        for (Map.Entry<String, JsonNode> entry : iterable(golden.get("cases"))) {
            String name = entry.getKey();
            JsonNode c = entry.getValue();
            try (NDManager manager = NDManager.newBaseManager()) {
                NDArray studentLogits = manager.create(student).reshape(rows * width, vocab);
                studentLogits.setRequiresGradient(true);
                NDArray teacherLogits = manager.create(teacher).reshape(rows * width, vocab);
                NDIndex completion = new NDIndex("{}", manager.create(indices));
                double loss;
                double entropy;
                try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                    DistillLoss.Sums sums = DistillLoss.of(studentLogits.get(completion), teacherLogits.get(completion),
                            c.get("beta").doubleValue(), c.get("temperature").doubleValue());
                    double divisor = c.get("num_items_in_batch").isNull() ? indices.length
                            : c.get("num_items_in_batch").doubleValue();
                    NDArray objective = Scalars.dividedBy(sums.divergence(), divisor);
                    loss = objective.getFloat();
                    entropy = sums.entropy();
                    collector.backward(objective);
                }
                assertEquals(c.get("valid_tokens").intValue(), indices.length);
                close(name + " loss", c.get("loss").doubleValue(), loss, RTOL);
                close(name + " entropy sum", c.get("entropy_sum").doubleValue(), entropy, RTOL);
                float[] grad = studentLogits.getGradient().toFloatArray();
                float[] want = flatten(c.get("grad"));
                double scale = 0;
                for (float w : want) {
                    scale = Math.max(scale, Math.abs(w));
                }
                for (int i = 0; i < want.length; i++) {
                    assertEquals(want[i], grad[i], RTOL * scale, name + " d loss / d student logit " + i);
                }
            }
            compared++;
        }
        assertEquals(7, compared);
    }

    @ParameterizedTest
    @ValueSource(strings = {"forward_kl", "jsd_t2", "reverse_kl_t0.7"})
    void oneStepWithATinyMixtralTeacherEqualsTrlDistillationTrainer(String name) throws IOException {
        JsonNode batchJson = JSON.readTree(golden("step/batch.json").toFile());
        JsonNode want = JSON.readTree(golden("step/expected.json").toFile()).get(name);
        TrainingBatch batch = batch(batchJson);
        try (NDManager manager = NDManager.newBaseManager();
                DistillTeacher teacher = teacher(batchJson.get("teacher"))) {
            LoraModel student = DpoGoldenTest.goldenModel(batchJson.get("student"), manager);
            DistillStep.Values values;
            try (NDManager step = manager.newSubManager()) {
                values = DistillStep.backward(student.model(), teacher, batch, want.get("beta").doubleValue(),
                        want.get("temperature").doubleValue(), batch.targetCount(), false, 0, step);
            }
            assertEquals(want.get("completion_tokens").intValue(), values.tokens());
            List<String> report = new ArrayList<>();
            report.add(close(name + " loss", want.get("loss").doubleValue(),
                    values.divergenceSum() / values.tokens(), RTOL));
            report.add(close(name + " entropy", want.get("entropy").doubleValue(),
                    values.entropySum() / values.tokens(), RTOL));
            try (SafetensorsReader grads = SafetensorsReader.open(golden("step").resolve(want.get("grads").asText()))) {
                report.add(DpoGoldenTest.compareGradients(name + " gradients", student, grads));
            }
            report.forEach(System.out::println);
        }
    }

    /** The golden's examples as TRL lays them out: prompt + completion, right-padded, the completions the targets. */
    static TrainingBatch batch(JsonNode batchJson) {
        JsonNode examples = batchJson.get("examples");
        long[][] sequences = new long[examples.size()][];
        int[] promptLengths = new int[examples.size()];
        for (int i = 0; i < examples.size(); i++) {
            long[] prompt = longs1(examples.get(i).get("prompt_ids"));
            long[] completion = longs1(examples.get(i).get("completion_ids"));
            sequences[i] = new long[prompt.length + completion.length];
            System.arraycopy(prompt, 0, sequences[i], 0, prompt.length);
            System.arraycopy(completion, 0, sequences[i], prompt.length, completion.length);
            promptLengths[i] = prompt.length;
        }
        return PreferenceBatch.completionRows(sequences, promptLengths, batchJson.get("pad_id").longValue());
    }

    private static DistillTeacher teacher(JsonNode paths) {
        Path step = golden("step");
        NDManager manager = NDManager.newBaseManager();
        CausalLm model = MistralCheckpoint.load(step.resolve(paths.get("model").asText()).normalize(), manager,
                MistralCheckpoint.DENSE);
        LoraModel lora = new LoraModel(model);
        PeftAdapter.load(lora, step.resolve(paths.get("adapter").asText()).normalize(), TrainingModel.ADAPTER_NAME);
        lora.setTraining(false);
        return DistillTeacher.of(manager, model);
    }

    private static float[] flatten(JsonNode nested) {
        List<Float> values = new ArrayList<>();
        collect(nested, values);
        float[] out = new float[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = values.get(i);
        }
        return out;
    }

    private static void collect(JsonNode node, List<Float> out) {
        if (node.isArray()) {
            node.forEach(child -> collect(child, out));
        } else {
            out.add(node.floatValue());
        }
    }
}
