package io.mixtune.trainer.optim;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * LoRA+ against peft 0.21's create_loraplus_optimizer with torch.optim.AdamW and transformers' cosine schedule
 * (interop/make_loraplus_goldens.py): a LoRA embedding's A and B at loraplus_lr_embedding, lora_A at lr, lora_B at
 * lr x loraplus_lr_ratio, each scaled by the schedule, weight decay in every group; four steps of fixed gradients.
 */
class LoraPlusGoldenTest {
    @Test
    void fourScheduledStepsEqualPeftsLoraPlusOptimizer() throws IOException {
        JsonNode c;
        try (InputStream in = getClass().getResourceAsStream("/golden/loraplus/loraplus.json")) {
            c = new ObjectMapper().readTree(in).get("case");
        }
        double lr = c.get("lr").asDouble();
        List<String> names = new ArrayList<>();
        c.get("parameters").forEach(p -> names.add(p.get("name").asText()));
        double[] factors = LoraPlus.lrFactors(names, lr, c.get("loraplus_lr_ratio").asDouble(),
                c.get("loraplus_lr_embedding").asDouble());
        int steps = c.get("steps_total").asInt();
        LearningRateSchedule schedule = new LearningRateSchedule(c.get("schedule").asText(), lr,
                c.get("warmup_steps").asInt(), steps);
        try (NDManager manager = NDManager.newBaseManager()) {
            List<NDArray> parameters = new ArrayList<>();
            for (JsonNode p : c.get("parameters")) {
                parameters.add(manager.create(floats(c.get("initial").get(p.get("name").asText())),
                        shape(p.get("shape"))));
            }
            AdamW adam = new AdamW(parameters, factors, 0.9, 0.999, 1e-8, c.get("weight_decay").asDouble());
            for (int step = 0; step < steps; step++) {
                JsonNode golden = c.get("steps").get(step);
                // PEFT's groups: A, embedding, B (and B without decay, empty here); lr x factor is each group's lr
                JsonNode groupLrs = golden.get("group_lrs");
                double scheduled = schedule.at(step);
                assertEquals(groupLrs.get(0).asDouble(), scheduled, 1e-15, "step " + step + ": lr");
                assertEquals(groupLrs.get(1).asDouble(), scheduled * factors[0], 1e-15, "step " + step + ": embedding");
                assertEquals(groupLrs.get(2).asDouble(), scheduled * factors[3], 1e-15, "step " + step + ": lora_B");
                try (NDList gradients = flatGradients(manager, adam, names, golden.get("gradients"))) {
                    adam.step(scheduled, gradients);
                }
                for (int i = 0; i < names.size(); i++) {
                    float[] expected = floats(golden.get("values").get(names.get(i)));
                    assertArrayEquals(expected, parameters.get(i).toFloatArray(), 2e-7f,
                            "step " + step + ": " + names.get(i));
                }
            }
        }
    }

    @Test
    void factorsFollowTheNamesAndAreOffWithoutARatio() {
        List<String> names = List.of("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                "base_model.model.model.embed_tokens.lora_embedding_B",
                "model.layers.0.self_attn.q_proj.lora_magnitude_vector"); // DoRA's, 1-d: PEFT's group B
        assertArrayEquals(new double[] {1, 16, 1e-6 / 2e-4, 16}, LoraPlus.lrFactors(names, 2e-4, 16.0, 1e-6));
        assertNull(LoraPlus.lrFactors(names, 2e-4, null, 1e-6));
    }

    /** The step's gradients laid out as AdamW's flatGradients: per bucket, its parameters' gradients flattened. */
    private static NDList flatGradients(NDManager manager, AdamW adam, List<String> names, JsonNode gradients) {
        NDList flat = new NDList();
        int parameter = 0;
        for (long[] sizes : adam.bucketSizes()) {
            List<Float> values = new ArrayList<>();
            for (int k = 0; k < sizes.length; k++, parameter++) {
                for (float v : floats(gradients.get(names.get(parameter)))) {
                    values.add(v);
                }
            }
            float[] bucket = new float[values.size()];
            for (int i = 0; i < bucket.length; i++) {
                bucket[i] = values.get(i);
            }
            flat.add(manager.create(bucket));
        }
        return flat;
    }

    private static float[] floats(JsonNode values) {
        float[] out = new float[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = (float) values.get(i).asDouble();
        }
        return out;
    }

    private static Shape shape(JsonNode dims) {
        long[] out = new long[dims.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = dims.get(i).asLong();
        }
        return new Shape(out);
    }
}
