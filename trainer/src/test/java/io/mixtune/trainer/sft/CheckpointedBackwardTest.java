package io.mixtune.trainer.sft;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.trainer.optim.GradientClipping;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Gradient checkpointing computes the gradients of the plain backward pass: with LoRA dropout on (the recompute must
 * draw the first pass's masks), an adapter that changes the output, padding (the load-balancing loss counts only real
 * tokens) and, for the Mixtral, the aux loss. The HF goldens check the checkpointed path against transformers too
 * ({@link SftGoldenTest}).
 */
class CheckpointedBackwardTest {
    @ParameterizedTest
    @ValueSource(strings = {"mixtral", "mistral"})
    void checkpointedGradientsEqualThePlainOnes(String name) throws Exception {
        try (NDManager manager = NDManager.newBaseManager()) {
            CausalLm model = MistralCheckpoint.load(SftGoldenTest.golden(name).resolve("model"), manager,
                    MistralCheckpoint.DENSE);
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", new LoraConfig(4, 8, 0.2, List.of("all-linear"), false, Map.of(), Map.of()),
                    LoraModel.Init.RANDOM, 7);
            lora.setTraining(true);
            List<NDArray> parameters = lora.parameters("default");
            TrainingBatch batch = paddedBatch(model.config().vocabSize());
            double aux = model.config().isMixtureOfExperts() ? 0.02 : 0;

            CausalLmLoss.Values plain = backward(model, parameters, batch, aux, false, manager);
            List<float[]> plainGradients = gradients(parameters);
            CausalLmLoss.Values checkpointed = backward(model, parameters, batch, aux, true, manager);
            List<float[]> checkpointedGradients = gradients(parameters);

            assertEquals(plain.crossEntropySum(), checkpointed.crossEntropySum(), 1e-6 * plain.crossEntropySum());
            if (aux > 0) {
                assertEquals(plain.loadBalancing(), checkpointed.loadBalancing(), 1e-6 * plain.loadBalancing());
            }
            double worst = 0;
            for (int i = 0; i < parameters.size(); i++) {
                float[] a = plainGradients.get(i);
                float[] b = checkpointedGradients.get(i);
                double max = 0;
                double diff = 0;
                for (int k = 0; k < a.length; k++) {
                    max = Math.max(max, Math.abs(a[k]));
                    diff = Math.max(diff, Math.abs(a[k] - b[k]));
                }
                assertTrue(max > 0, "array " + i + " got no gradient");
                worst = Math.max(worst, diff / max);
            }
            System.out.printf("%s: checkpointed vs plain gradients, worst diff %.2e of the array's max%n", name, worst);
            assertTrue(worst < 1e-5, "worst relative gradient difference " + worst);
        }
    }

    private static CausalLmLoss.Values backward(CausalLm model, List<NDArray> parameters, TrainingBatch batch,
            double aux, boolean checkpointing, NDManager manager) {
        GradientClipping.zero(parameters);
        return CausalLmLoss.backward(model, batch, batch.targetCount(), aux, checkpointing, 1234, manager);
    }

    private static List<float[]> gradients(List<NDArray> parameters) {
        List<float[]> gradients = new ArrayList<>();
        for (NDArray parameter : parameters) {
            try (NDArray gradient = parameter.getGradient()) {
                gradients.add(gradient.toFloatArray());
            }
        }
        return gradients;
    }

    /** Two rows of 24 tokens, the second padded after 15, targets on the second half of each row's real tokens. */
    private static TrainingBatch paddedBatch(int vocab) {
        int length = 24;
        int[] real = {24, 15};
        long[][] ids = new long[2][length];
        long[][] labels = new long[2][length];
        long[][] positions = new long[2][length];
        long[][] padding = new long[2][length];
        for (int r = 0; r < 2; r++) {
            for (int t = 0; t < length; t++) {
                boolean isReal = t < real[r];
                ids[r][t] = isReal ? 3 + (r * 31 + t * 7) % (vocab - 3) : 2;
                labels[r][t] = isReal && t >= real[r] / 2 ? ids[r][t] : -100;
                positions[r][t] = t;
                padding[r][t] = isReal ? 1 : 0;
            }
        }
        return new TrainingBatch(ids, labels, positions, null, padding);
    }
}
