package io.mixtune.model.mistral;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.generate.Generator;
import io.mixtune.model.generate.TokenSampler;
import io.mixtune.model.nn.Linear;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.BiFunction;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * compute_dtype fp16 as PEFT's prepare_model_for_kbit_training plus autocast runs it: the embeddings, the norms and
 * the residual stream in float32, only what goes into the attention and MLP blocks in float16.
 */
class Float16ResidualTest {
    private static final long[] IDS = {1, 14, 15, 92, 65, 35, 89, 79, 32, 7, 3};

    /**
     * Embeddings of magnitude 60000 (float16 holds them) plus a first MLP whose outputs reach ~10^4: the residual
     * after the first layer passes 65504, float16's largest value, while every value inside a block stays in range.
     * A float16 residual turns to inf there and the next norm to NaN; a float32 one gives the float32 logits within
     * float16's rounding of the blocks, whole rows at once and through generation's KV cache.
     */
    @ParameterizedTest(name = "mixtral {0}")
    @ValueSource(booleans = {false, true})
    void aResidualBeyondFloat16sRangeGivesFiniteLogits(boolean moe, @TempDir Path dir) {
        writeCheckpoint(moe, dir, (name, values) -> {
            if (name.equals("model.embed_tokens.weight")) {
                for (int i = 0; i < values.length; i++) {
                    values[i] = Math.copySign(60000f, values[i]);
                }
            } else if (name.startsWith("model.layers.0.")
                    && (name.endsWith("down_proj.weight") || name.endsWith("w2.weight"))) {
                for (int i = 0; i < values.length; i++) {
                    values[i] *= 500f;
                }
            }
            return values;
        });
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm float32 = MistralCheckpoint.load(dir, manager, MistralCheckpoint.DENSE, DataType.FLOAT32);
                CausalLm float16 = MistralCheckpoint.load(dir, manager, MistralCheckpoint.DENSE, DataType.FLOAT16)) {
            NDArray ids = manager.create(IDS).reshape(1, IDS.length);
            NDArray positions = manager.arange(0, IDS.length, 1, DataType.INT64).reshape(1, IDS.length);
            NDArray mask = AttentionMask.forRows(manager, 1, IDS.length, null, null, null, DataType.FLOAT32);
            NDArray embedded = float32.embed(ids);
            NDArray afterFirst = float32.layer(0, embedded, float32.anglesAt(positions), mask)
                    .hidden();
            float residual = afterFirst.abs().max().getFloat();
            float blockOutput = afterFirst.sub(embedded).abs().max().getFloat();
            assertTrue(residual > 65504, "the residual stays in float16's range: " + residual);
            assertTrue(blockOutput < 65504, "the block's own output leaves float16's range: " + blockOutput);

            float[] expected = float32.forward(ids, positions, null).toFloatArray();
            float[] actual = float16.forward(ids, positions, null).toType(DataType.FLOAT32, false).toFloatArray();
            double scale = maxAbs(expected);
            double worst = maxDifference(expected, actual);
            System.out.printf(Locale.ROOT, "residual %.0f: fp16 logits off fp32 by %.3g at scale %.3g%n", residual,
                    worst, scale);
            assertTrue(Double.isFinite(worst), "float16 logits are not finite");
            assertTrue(worst < 2e-2 * scale, "float16 logits off float32 by " + worst + " at scale " + scale);

            // Generation: chunked prefill through the rolling KV cache (window 6), float16 keys and values.
            List<float[]> cachedFloat16 = new ArrayList<>();
            List<float[]> cachedFloat32 = new ArrayList<>();
            new Generator(float16).generate(IDS, 3, TokenSampler.greedy(), cachedFloat16);
            new Generator(float32).generate(IDS, 3, TokenSampler.greedy(), cachedFloat32);
            for (int t = 0; t < IDS.length; t++) {
                double off = maxDifference(cachedFloat32.get(t), cachedFloat16.get(t));
                assertTrue(off < 2e-2 * scale, "cached float16 logits at " + t + " off float32 by " + off);
            }
        }
    }

    /**
     * The residual and the final hidden states are float32, and every linear layer is handed float16. On a model whose
     * residual outweighs what the blocks add (embeddings x30, o_proj and down_proj x0.1, 8 layers: trained models'
     * residual grows so), float16 compute lands closer to float32 than with a float16 residual, whose every addition
     * rounds to the residual's magnitude: final states RMS off by 3.8e-4 / 4.4e-4 (Mistral / Mixtral) where a float16
     * residual gave 9.2e-4 / 1.1e-3, logits RMS 1.4e-3 / 1.6e-3 where it gave 2.7e-3 / 3.0e-3.
     */
    @ParameterizedTest(name = "mixtral {0}")
    @ValueSource(booleans = {false, true})
    void theResidualIsFloat32AndTheBlocksGetFloat16(boolean moe, @TempDir Path dir) {
        ModelConfig tiny = ForwardTest.config(moe);
        ModelConfig config = new ModelConfig(tiny.modelType(), tiny.hiddenSize(), tiny.intermediateSize(), 8,
                tiny.numAttentionHeads(), tiny.numKeyValueHeads(), tiny.headDim(), tiny.vocabSize(), tiny.rmsNormEps(),
                tiny.ropeTheta(), tiny.slidingWindow(), tiny.maxPositionEmbeddings(), false, tiny.numLocalExperts(),
                tiny.numExpertsPerTok(), tiny.routerAuxLossCoef(), tiny.bosTokenId(), tiny.eosTokenId());
        writeCheckpoint(config, dir, (name, values) -> {
            float factor = name.equals("model.embed_tokens.weight") ? 30f
                    : name.endsWith("o_proj.weight") || name.endsWith("down_proj.weight") || name.endsWith("w2.weight")
                            ? 0.1f : 1f;
            for (int i = 0; i < values.length; i++) {
                values[i] *= factor;
            }
            return values;
        });
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm float32 = MistralCheckpoint.load(dir, manager, MistralCheckpoint.DENSE, DataType.FLOAT32);
                CausalLm float16 = MistralCheckpoint.load(dir, manager, MistralCheckpoint.DENSE, DataType.FLOAT16)) {
            assertEquals(DataType.FLOAT16, float16.computeType());
            Map<String, DataType> inputTypes = new ConcurrentHashMap<>();
            float16.replaceLinears((moduleName, layer) -> new Linear() {
                @Override
                public NDArray forward(NDArray x) {
                    inputTypes.put(moduleName, x.getDataType());
                    return layer.forward(x);
                }

                @Override
                public long inFeatures() {
                    return layer.inFeatures();
                }

                @Override
                public long outFeatures() {
                    return layer.outFeatures();
                }
            });
            long[] tokens = new long[40];
            for (int i = 0; i < tokens.length; i++) {
                tokens[i] = (i * 37 + 5) % config.vocabSize();
            }
            NDArray ids = manager.create(tokens).reshape(1, tokens.length);
            NDArray positions = manager.arange(0, tokens.length, 1, DataType.INT64).reshape(1, tokens.length);
            assertEquals(DataType.FLOAT32, float16.embed(ids).getDataType(), "embeddings");
            NDArray mask16 = AttentionMask.forRows(manager, 1, tokens.length, null, null, null, DataType.FLOAT16);
            NDArray residual = float16.layer(0, float16.embed(ids), float16.anglesAt(positions),
                    mask16).hidden();
            assertEquals(DataType.FLOAT32, residual.getDataType(), "a layer's output");
            NDArray states = float16.hiddenStates(ids, positions, mask16, null).states();
            assertEquals(DataType.FLOAT32, states.getDataType(), "the final norm's output");
            NDArray logits = float16.logits(states);
            assertEquals(config.numHiddenLayers() * (moe ? 4 + 1 + 3 * 4 : 7) + 1, inputTypes.size(),
                    "linear layers seen: " + inputTypes.keySet());
            inputTypes.forEach((name, type) -> assertEquals(DataType.FLOAT16, type, name));

            NDArray mask32 = AttentionMask.forRows(manager, 1, tokens.length, null, null, null, DataType.FLOAT32);
            NDArray expectedStates = float32.hiddenStates(ids, positions, mask32, null).states();
            NDArray expectedLogits = float32.logits(expectedStates);
            double statesRms = rms(states.toType(DataType.FLOAT32, false).sub(expectedStates));
            double logitsRms = rms(logits.toType(DataType.FLOAT32, false).sub(expectedLogits));
            System.out.printf(Locale.ROOT, "mixtral %s: fp16 off fp32 by RMS %.3g (final states), %.3g (logits)%n", moe,
                    statesRms, logitsRms);
            assertTrue(statesRms < 6e-4, "final states off float32 by RMS " + statesRms);
            assertTrue(logitsRms < 2.2e-3, "logits off float32 by RMS " + logitsRms);
        }
    }

    private static double rms(NDArray difference) {
        return difference.square().mean().sqrt().getFloat();
    }

    /** A tiny Mistral or Mixtral (std 0.5, so attention and routing matter) in float32, each tensor through edit. */
    static void writeCheckpoint(boolean moe, Path dir, BiFunction<String, float[], float[]> edit) {
        writeCheckpoint(ForwardTest.config(moe), dir, edit);
    }

    static void writeCheckpoint(ModelConfig config, Path dir, BiFunction<String, float[], float[]> edit) {
        RandomCheckpoint.write(config, dir, 7, DType.F32, Long.MAX_VALUE, 0.5);
        Path file = dir.resolve("model.safetensors");
        List<TensorSpec> specs = new ArrayList<>();
        Map<String, float[]> values = new HashMap<>();
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            for (String name : Set.copyOf(reader.names())) {
                specs.add(new TensorSpec(name, DType.F32, reader.info(name).shape()));
                values.put(name, edit.apply(name, reader.readFloats(name)));
            }
        }
        SafetensorsWriter.writeFile(file, specs, spec -> values.get(spec.name()));
    }

    private static double maxDifference(float[] expected, float[] actual) {
        double worst = 0;
        for (int i = 0; i < expected.length; i++) {
            double difference = Math.abs((double) expected[i] - actual[i]);
            if (Double.isNaN(difference)) {
                return difference;
            }
            worst = Math.max(worst, difference);
        }
        return worst;
    }

    private static double maxAbs(float[] values) {
        double max = 0;
        for (float v : values) {
            max = Math.max(max, Math.abs(v));
        }
        return max;
    }
}
