package io.mixtune.lora.nf4;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.training.GradientCollector;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.DenseLinear;
import io.mixtune.model.safetensors.DType;
import java.nio.file.Path;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class Nf4LoadingTest {

    static ModelConfig tinyMixtral() {
        return new ModelConfig(ModelConfig.ModelType.MIXTRAL, 64, 96, 2, 4, 2, 16, 101, 1e-5, 1e4, null, 64, false,
                4, 2, 0.02, 1, 2);
    }

    @Test
    void everyExpertAndAttentionLayerIsNf4WhileRouterAndHeadStayDense(@TempDir Path dir) {
        RandomCheckpoint.write(tinyMixtral(), dir, 1, DType.BF16, Long.MAX_VALUE);
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(dir, manager, Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION))) {
            Map<String, String> kinds = new TreeMap<>();
            model.replaceLinears((name, linear) -> {
                kinds.put(name, linear.getClass().getSimpleName());
                return linear;
            });
            // 2 layers x (4 attention + 4 experts x 3 + router) + lm_head
            assertEquals(2 * (4 + 12 + 1) + 1, kinds.size());
            kinds.forEach((name, kind) -> {
                boolean dense = name.equals("lm_head") || name.endsWith("block_sparse_moe.gate");
                assertEquals(dense ? "DenseLinear" : "Nf4Linear", kind, name);
            });
        }
    }

    /** The NF4 model computes exactly what a dense model holding the dequantized weights computes. */
    @Test
    void nf4ForwardEqualsDenseForwardOfTheDequantizedWeights(@TempDir Path dir) {
        RandomCheckpoint.write(tinyMixtral(), dir, 2, DType.F32, Long.MAX_VALUE, 0.3);
        MistralCheckpoint.LinearFactory dequantized = (name, weight, shape, manager) ->
                Nf4Loading.KEEP_FULL_PRECISION.test(name)
                        ? MistralCheckpoint.DENSE.create(name, weight, shape, manager)
                        : new DenseLinear(manager.create(Nf4Tensor.quantize(weight, shape.getShape(), true).dequantize(),
                                shape));
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm nf4 = MistralCheckpoint.load(dir, manager, Nf4Loading.factory(Nf4Loading.KEEP_FULL_PRECISION));
                CausalLm reference = MistralCheckpoint.load(dir, manager, dequantized);
                CausalLm full = MistralCheckpoint.load(dir, manager)) {
            NDArray ids = manager.create(new long[][] {{1, 7, 42, 99, 3, 5, 64, 80}});
            NDArray positions = manager.arange(0, 8, 1, DataType.INT64).reshape(1, 8);
            NDArray a = nf4.forward(ids, positions, null);
            NDArray b = reference.forward(ids, positions, null);
            float worst = a.sub(b).abs().max().getFloat();
            assertTrue(worst < 1e-5, "nf4 and dequantized-dense logits differ by " + worst);
            float quantizationError = a.sub(full.forward(ids, positions, null)).abs().max().getFloat();
            assertTrue(quantizationError > 1e-4, "NF4 should change the logits a little, not " + quantizationError);
        }
    }

    @Test
    void gradientsFlowThroughToTheInputButNotIntoTheBase() {
        Nf4Tensor weight;
        try (NDManager manager = NDManager.newBaseManager()) {
            float[] w = new float[64 * 32];
            for (int i = 0; i < w.length; i++) {
                w[i] = (i % 17 - 8) * 0.01f;
            }
            weight = Nf4Tensor.quantize(w, new long[] {64, 32}, true);
            Nf4Linear linear = new Nf4Linear(weight);
            NDArray x = manager.ones(new ai.djl.ndarray.types.Shape(2, 32));
            x.setRequiresGradient(true);
            try (GradientCollector collector = Engine.getInstance().newGradientCollector()) {
                collector.backward(linear.forward(x).sum());
            }
            // d/dx sum(x W^T) = column sums of W, the dequantized weight
            float[] dequantized = weight.dequantize();
            float[] expected = new float[32];
            for (int o = 0; o < 64; o++) {
                for (int i = 0; i < 32; i++) {
                    expected[i] += dequantized[o * 32 + i];
                }
            }
            float[] gradient = x.getGradient().toFloatArray();
            for (int i = 0; i < 32; i++) {
                assertEquals(expected[i], gradient[i], 1e-5);
                assertEquals(expected[i], gradient[32 + i], 1e-5);
            }
        }
    }
}
