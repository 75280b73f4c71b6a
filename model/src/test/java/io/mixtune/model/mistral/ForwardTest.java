package io.mixtune.model.mistral;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.BaseNDManager;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.generate.Generator;
import io.mixtune.model.generate.TokenSampler;
import io.mixtune.model.safetensors.DType;
import java.nio.file.Path;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.io.TempDir;

/** Invariants of the forward pass that need no reference implementation. */
class ForwardTest {

    static ModelConfig config(boolean moe) {
        return new ModelConfig(moe ? ModelConfig.ModelType.MIXTRAL : ModelConfig.ModelType.MISTRAL,
                32, 48, 2, 4, 2, 8, 97, 1e-5, 10000.0, 6, 256, false, moe ? 4 : 0, moe ? 2 : 0, moe ? 0.02 : 0.0, 1, 2);
    }

    /** Two samples packed in one row, with restarting positions and sample ids, give the logits of each run alone. */
    @ParameterizedTest(name = "mixtral {0}")
    @ValueSource(booleans = {false, true})
    void packedSamplesDoNotSeeEachOther(boolean moe, @TempDir Path dir) {
        RandomCheckpoint.write(config(moe), dir, 3, DType.F32, Long.MAX_VALUE, 0.5);
        long[] first = {1, 14, 15, 92, 65, 35, 89, 79, 32};
        long[] second = {1, 38, 46, 26, 43, 38, 32};
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(dir, manager)) {
            int length = first.length + second.length;
            long[] ids = new long[length];
            long[] positions = new long[length];
            long[] samples = new long[length];
            for (int t = 0; t < length; t++) {
                boolean inFirst = t < first.length;
                ids[t] = inFirst ? first[t] : second[t - first.length];
                positions[t] = inFirst ? t : t - first.length;
                samples[t] = inFirst ? 0 : 1;
            }
            NDArray mask = AttentionMask.forRows(manager, 1, length, null, manager.create(samples).reshape(1, length),
                    model.config().slidingWindow(), DataType.FLOAT32);
            NDArray packed = model.logits(model.hiddenStates(manager.create(ids).reshape(1, length),
                    manager.create(positions).reshape(1, length), mask, null).states()).get(new NDIndex("0"));
            NDArray alone = alone(model, manager, first).concat(alone(model, manager, second), 0);
            double worst = packed.sub(alone).abs().max().getFloat();
            double scale = alone.abs().max().getFloat();
            assertTrue(scale > 1, "logits too flat to show anything: " + scale);
            // Rounding differs between the packed and separate matmul shapes; a leak across samples would be O(scale).
            assertTrue(worst < 1e-6 * scale * 10, "packed logits differ from separate runs by " + worst + " at scale " + scale);
        }
    }

    private static NDArray alone(CausalLm model, NDManager manager, long[] ids) {
        NDArray positions = manager.arange(0, ids.length, 1, DataType.INT64).reshape(1, ids.length);
        return model.forward(manager.create(ids).reshape(1, ids.length), positions, null).get(new NDIndex("0"));
    }

    /** Native memory is freed only when NDArrays close: nothing a forward or a generation makes may stay behind. */
    @ParameterizedTest(name = "mixtral {0}")
    @ValueSource(booleans = {false, true})
    void forwardAndGenerationLeaveNothingInTheWeightsManager(boolean moe, @TempDir Path dir) {
        RandomCheckpoint.write(config(moe), dir, 3, DType.F32, Long.MAX_VALUE);
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(dir, manager)) {
            BaseNDManager weights = (BaseNDManager) model.manager();
            int before = weights.getManagedArrays().size();
            for (int i = 0; i < 3; i++) {
                try (NDManager step = manager.newSubManager()) {
                    model.forward(step.create(new long[][] {{1, 5, 7, 9, 11, 13, 17, 19, 23}}),
                            step.arange(0, 9, 1, DataType.INT64).reshape(1, 9), null);
                }
                new Generator(model).generate(new long[] {1, 5, 7, 9, 11, 13, 17, 19, 23}, 10, TokenSampler.greedy(), null);
            }
            assertEquals(before, weights.getManagedArrays().size(), "arrays left in the weights' manager");
            assertEquals(before, ((BaseNDManager) manager).getManagedArrays().size(),
                    "the parent manager holds anything but the weights");
        }
    }
}
