package io.mixtune.lora.adapter;

import static io.mixtune.lora.adapter.LoraAdapterTest.assertArrayClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.GradientCollector;
import io.mixtune.lora.nf4.Nf4Loading;
import io.mixtune.lora.nf4.Nf4Tensor;
import io.mixtune.lora.nf4.RecomputedWeights;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.DenseLinear;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A DoRA adapter PEFT 0.21 made (interop/make_dora_goldens.py: a tiny Mistral, DoRA on every linear and the lm_head,
 * magnitudes moved off their start) gives PEFT's logits, PEFT's gradients of A, B and the magnitude, and merges to
 * PEFT's merge_and_unload weights; on an NF4 base it computes with the dequantized weight, as PEFT's bnb.Linear4bit.
 */
class DoraGoldenTest {
    private static final double LOGITS = 1e-4;

    @Test
    void logitsAndGradientsEqualPeft() throws Exception {
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(golden("base"), manager);
                SafetensorsReader expected = SafetensorsReader.open(golden("expected.safetensors"))) {
            LoraModel lora = new LoraModel(model);
            PeftAdapter.load(lora, golden("adapter"), "default");
            assertTrue(lora.config("default").useDora());
            Map<String, float[]> gradients = gradients(lora, expected, manager, false);
            float[] logits = logits(model, expected, manager);
            assertArrayClose(expected.readFloats("dora.logits"), logits, LOGITS, "logits");
            List<String> names = lora.parameterNames("default");
            assertEquals(45, names.size()); // A, B and the magnitude of 7 linears in 2 layers and the lm_head
            double worst = 0;
            for (String name : names) {
                String key = "grad.base_model.model." + name + (name.endsWith("magnitude_vector") ? "" : ".weight");
                float[] want = expected.readFloats(key);
                assertArrayClose(want, gradients.get(name), 2e-5 * Math.max(1, maxAbs(want)), name);
                worst = Math.max(worst, LoraAdapterTest.maxDiff(want, gradients.get(name)) / Math.max(1, maxAbs(want)));
            }
            System.out.printf("DoRA vs PEFT: logits within %.2e, gradients within %.2e of max(1, their largest)%n",
                    LoraAdapterTest.maxDiff(expected.readFloats("dora.logits"), logits), worst);
        }
    }

    @Test
    void recomputedNf4WeightsGiveThePlainGradients() throws Exception {
        // DoRA reads the base weight (its norm, and the base output it rescales): with the NF4 weights dequantized
        // again in the backward instead of kept (RecomputedWeights, gradient checkpointing's path), the gradients
        // are the plain backward's, and NF4 equals a dense base holding the dequantized weights.
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm nf4 = MistralCheckpoint.load(golden("base"), manager,
                        Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION));
                CausalLm dequantized = MistralCheckpoint.load(golden("base"), manager, (name, weight, shape, m) ->
                        Nf4Loading.KEEP_FULL_PRECISION.test(name)
                        ? MistralCheckpoint.DENSE.create(name, weight, shape, m)
                        : new DenseLinear(m.create(Nf4Tensor.quantize(weight, shape.getShape(), true).dequantize(),
                                shape)));
                SafetensorsReader expected = SafetensorsReader.open(golden("expected.safetensors"))) {
            LoraModel nf4Lora = new LoraModel(nf4);
            PeftAdapter.load(nf4Lora, golden("adapter"), "default");
            LoraModel denseLora = new LoraModel(dequantized);
            PeftAdapter.load(denseLora, golden("adapter"), "default");
            Map<String, float[]> plain = gradients(nf4Lora, expected, manager, false);
            Map<String, float[]> recomputed = gradients(nf4Lora, expected, manager, true);
            Map<String, float[]> dense = gradients(denseLora, expected, manager, false);
            for (String name : plain.keySet()) {
                assertArrayClose(plain.get(name), recomputed.get(name), 1e-5 * Math.max(1, maxAbs(plain.get(name))),
                        name + " recomputed");
                assertArrayClose(dense.get(name), plain.get(name), 1e-5 * Math.max(1, maxAbs(dense.get(name))),
                        name + " dense");
            }
            assertArrayClose(logits(dequantized, expected, manager), logits(nf4, expected, manager), LOGITS, "nf4");
        }
    }

    @Test
    void mergeEqualsPeftsMergeAndUnload(@TempDir Path dir) throws Exception {
        Path merged = dir.resolve("merged");
        AdapterMerge.merge(golden("base"), golden("adapter"), merged, null, Long.MAX_VALUE);
        try (SafetensorsReader expected = SafetensorsReader.open(golden("expected.safetensors"));
                SafetensorsReader written = SafetensorsReader.open(merged);
                SafetensorsReader base = SafetensorsReader.open(golden("base"))) {
            int checked = 0;
            for (String key : expected.names()) {
                if (key.startsWith("merged.")) {
                    String tensor = key.substring("merged.".length()) + ".weight";
                    assertArrayClose(expected.readFloats(key), written.readFloats(tensor), 1e-5, tensor);
                    assertTrue(LoraAdapterTest.maxDiff(base.readFloats(tensor), written.readFloats(tensor)) > 1e-3,
                            tensor + " unchanged");
                    checked++;
                }
            }
            assertEquals(15, checked);
        }
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(merged, manager);
                SafetensorsReader expected = SafetensorsReader.open(golden("expected.safetensors"))) {
            assertArrayClose(expected.readFloats("dora.logits"), logits(model, expected, manager), LOGITS, "merged");
        }
    }

    /** Module name + .lora_A/.lora_B/.lora_magnitude_vector to the gradient of sum(logits * weights). */
    static Map<String, float[]> gradients(LoraModel lora, SafetensorsReader expected, NDManager parent,
            boolean recompute) {
        CausalLm model = lora.model();
        List<NDArray> parameters = lora.parameters("default");
        List<String> names = lora.parameterNames("default");
        Map<String, float[]> gradients = new LinkedHashMap<>();
        try (NDManager manager = parent.newSubManager();
                GradientCollector collector = Engine.getInstance().newGradientCollector()) {
            long[] ids = promptIds(expected);
            NDArray weights = manager.create(expected.readFloats("objective_weights"), new Shape(ids.length,
                    model.config().vocabSize()));
            NDArray inputIds = manager.create(ids).reshape(1, ids.length);
            NDArray positions = manager.arange(0, ids.length, 1, DataType.INT64).reshape(1, ids.length);
            if (recompute) {
                try (RecomputedWeights cuts = RecomputedWeights.record(manager)) {
                    cuts.backward(model.forward(inputIds, positions, null).reshape(ids.length, -1).mul(weights).sum());
                }
            } else {
                collector.backward(model.forward(inputIds, positions, null).reshape(ids.length, -1).mul(weights).sum());
            }
            for (int i = 0; i < names.size(); i++) {
                gradients.put(names.get(i), parameters.get(i).getGradient().toFloatArray());
            }
            collector.zeroGradients();
        }
        return gradients;
    }

    static float[] logits(CausalLm model, SafetensorsReader expected, NDManager parent) {
        try (NDManager manager = parent.newSubManager()) {
            long[] ids = promptIds(expected);
            return model.forward(manager.create(ids).reshape(1, ids.length),
                    manager.arange(0, ids.length, 1, DataType.INT64).reshape(1, ids.length), null).toFloatArray();
        }
    }

    /** The prompt, stored as float32 (small integers, exact). */
    static long[] promptIds(SafetensorsReader expected) {
        float[] stored = expected.readFloats("prompt_ids");
        long[] ids = new long[stored.length];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = (long) stored[i];
        }
        return ids;
    }

    static double maxAbs(float[] values) {
        double max = 0;
        for (float v : values) {
            max = Math.max(max, Math.abs(v));
        }
        return max;
    }

    static Path golden(String name) {
        return PeftGoldenTest.golden("../dora/" + name);
    }
}
