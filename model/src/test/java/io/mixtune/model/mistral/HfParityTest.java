package io.mixtune.model.mistral;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.generate.Generator;
import io.mixtune.model.generate.TokenSampler;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * mixtune against Hugging Face transformers 5 on the goldens interop/make_goldens.py writes: the prompt's logits
 * within 1e-4 and the same greedy tokens. The cases cover grouped-query attention, a sliding window shorter than the
 * prompt, bf16 files, sharded files, both Mixtral weight layouts and padded batches with restarting positions.
 */
class HfParityTest {
    static final double TOLERANCE = 1e-4;
    private static final ObjectMapper JSON = new ObjectMapper();

    static Path golden(String name) {
        try {
            return Path.of(HfParityTest.class.getResource("/golden/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"mistral-fp32", "mistral-bf16", "mixtral-sharded", "mixtral-fused", "mistral-nemo-tied"})
    void promptLogitsAndGreedyTokensMatchTransformers(String name) throws IOException {
        Path dir = golden(name);
        JsonNode prompt = JSON.readTree(dir.resolve("prompt.json").toFile());
        long[] promptIds = longs(prompt.get("prompt_ids"));
        int maxNewTokens = prompt.get("max_new_tokens").intValue();
        long[] expectedIds = longs(JSON.readTree(dir.resolve("greedy.json").toFile()).get("new_ids"));
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(dir, manager);
                SafetensorsReader expected = SafetensorsReader.open(dir.resolve("expected.safetensors"))) {
            List<float[]> logits = new ArrayList<>();
            List<Integer> generated = new Generator(model).generate(promptIds, maxNewTokens, TokenSampler.greedy(), logits);
            float[] flat = new float[logits.size() * logits.get(0).length];
            for (int t = 0; t < logits.size(); t++) {
                System.arraycopy(logits.get(t), 0, flat, t * logits.get(t).length, logits.get(t).length);
            }
            assertClose(expected.readFloats("logits"), flat, name + " prompt logits");
            assertArrayEquals(expectedIds, generated.stream().mapToLong(Integer::longValue).toArray(),
                    name + " greedy tokens");
        }
    }

    /**
     * compute_dtype fp16 against transformers as QLoRA training runs it on a GPU (interop/make_autocast_goldens.py):
     * float32 embeddings, norms and residual stream, matmuls in float16 under autocast. Rounding points differ in
     * detail (transformers rotates q and k in float32 and keeps the probabilities float32 until autocast rounds them
     * for the matmul), so the logits agree to float16's rounding (its step is 3.9e-3 at the logits' scale of 4.9), not
     * bit for bit: 6.9e-3, where a float16 residual stream gave 1.4e-2 and float16 itself moves transformers' logits
     * 8.3e-3 from float32. From the float32 logits mixtune's float16 ones are 6.9e-3 off (RMS 1.4e-3), where a float16
     * residual stream gave 1.3e-2 (RMS 2.3e-3).
     */
    @Test
    void float16LogitsMatchTransformersUnderAutocast() throws IOException {
        Path dir = golden("mistral-fp32");
        long[] promptIds = longs(JSON.readTree(dir.resolve("prompt.json").toFile()).get("prompt_ids"));
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(dir, manager, MistralCheckpoint.DENSE, DataType.FLOAT16);
                SafetensorsReader expected = SafetensorsReader.open(dir.resolve("autocast_fp16.safetensors"));
                SafetensorsReader float32 = SafetensorsReader.open(dir.resolve("expected.safetensors"))) {
            int length = promptIds.length;
            float[] logits = model.forward(manager.create(promptIds).reshape(1, length),
                    manager.arange(0, length, 1, DataType.INT64).reshape(1, length), null)
                    .toType(DataType.FLOAT32, false).toFloatArray();
            float[] reference = expected.readFloats("logits");
            float[] float32Logits = float32.readFloats("logits");
            assertEquals(reference.length, logits.length);
            double worst = 0;
            double worstFromFloat32 = 0;
            for (int i = 0; i < logits.length; i++) {
                worst = Math.max(worst, Math.abs(logits[i] - reference[i]));
                worstFromFloat32 = Math.max(worstFromFloat32, Math.abs(logits[i] - float32Logits[i]));
            }
            System.out.printf(java.util.Locale.ROOT, "fp16 logits off transformers' autocast by %.3g, off float32 by "
                    + "%.3g%n", worst, worstFromFloat32);
            assertTrue(worst < 1e-2, "fp16 logits off transformers' autocast fp16 by " + worst);
            assertTrue(worstFromFloat32 < 1e-2, "fp16 logits off float32 by " + worstFromFloat32);
        }
    }

    @Test
    void routerLogitsMatchTransformers() throws IOException {
        Path dir = golden("mixtral-sharded");
        long[] promptIds = longs(JSON.readTree(dir.resolve("prompt.json").toFile()).get("prompt_ids"));
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(dir, manager);
                SafetensorsReader expected = SafetensorsReader.open(dir.resolve("expected.safetensors"))) {
            int length = promptIds.length;
            NDArray ids = manager.create(promptIds).reshape(1, length);
            NDArray positions = manager.arange(0, length, 1, DataType.INT64).reshape(1, length);
            NDArray mask = AttentionMask.forRows(manager, 1, length, null, null, model.config().slidingWindow(),
                    DataType.FLOAT32);
            List<NDArray> routerLogits = model.hiddenStates(ids, positions, mask, null).routerLogits();
            assertEquals(model.config().numHiddenLayers(), routerLogits.size());
            for (int layer = 0; layer < routerLogits.size(); layer++) {
                assertClose(expected.readFloats("router_logits." + layer), routerLogits.get(layer).toFloatArray(),
                        "router logits of layer " + layer);
            }
        }
    }

    @Test
    void paddedBatchWithRestartingPositionsMatchesTransformers() throws IOException {
        Path dir = golden("mistral-batch");
        JsonNode inputs = JSON.readTree(dir.resolve("inputs.json").toFile());
        long[][] ids = rows(inputs.get("input_ids"));
        long[][] attention = rows(inputs.get("attention_mask"));
        long[][] positions = rows(inputs.get("position_ids"));
        int batch = ids.length;
        int length = ids[0].length;
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(dir.resolve(inputs.get("checkpoint").asText()).normalize(), manager);
                SafetensorsReader expected = SafetensorsReader.open(dir.resolve("expected.safetensors"))) {
            float[] logits = model.forward(manager.create(ids), manager.create(positions), manager.create(attention))
                    .toFloatArray();
            float[] reference = expected.readFloats("logits");
            int vocab = model.config().vocabSize();
            assertEquals(reference.length, logits.length);
            double worst = 0;
            int compared = 0;
            for (int b = 0; b < batch; b++) {
                for (int t = 0; t < length; t++) {
                    if (attention[b][t] == 0) {
                        continue; // padding rows are garbage in both
                    }
                    compared++;
                    for (int v = 0; v < vocab; v++) {
                        int i = (b * length + t) * vocab + v;
                        worst = Math.max(worst, Math.abs(reference[i] - logits[i]));
                    }
                }
            }
            assertEquals(27, compared);
            assertTrue(worst <= TOLERANCE, "batch logits differ from transformers by " + worst);
        }
    }

    static void assertClose(float[] expected, float[] actual, String what) {
        assertEquals(expected.length, actual.length, what + ": size");
        double worst = 0;
        double scale = 0;
        for (int i = 0; i < expected.length; i++) {
            worst = Math.max(worst, Math.abs(expected[i] - actual[i]));
            scale = Math.max(scale, Math.abs(expected[i]));
        }
        assertTrue(scale > 0.1, what + ": the reference is near zero, so the comparison would prove nothing");
        assertTrue(worst <= TOLERANCE, what + " differ from transformers by " + worst + " (tolerance " + TOLERANCE + ")");
    }

    private static long[] longs(JsonNode array) {
        long[] values = new long[array.size()];
        for (int i = 0; i < values.length; i++) {
            values[i] = array.get(i).longValue();
        }
        return values;
    }

    private static long[][] rows(JsonNode array) {
        long[][] values = new long[array.size()][];
        for (int i = 0; i < values.length; i++) {
            values[i] = longs(array.get(i));
        }
        return values;
    }
}
