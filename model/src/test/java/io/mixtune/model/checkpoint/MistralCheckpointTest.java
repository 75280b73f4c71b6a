package io.mixtune.model.checkpoint;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDManager;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.CheckpointException;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.io.TempDir;

/** A checkpoint that does not fit its config.json is refused before loading, with everything that is wrong named. */
class MistralCheckpointTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    static ModelConfig tinyMixtral() {
        return new ModelConfig(ModelConfig.ModelType.MIXTRAL, 16, 24, 2, 4, 2, 4, 50, 1e-5, 1e4, null, 64, false,
                3, 2, 0.02, 1, 2);
    }

    @Test
    void missingTensorsAreAllListed(@TempDir Path dir) throws IOException {
        RandomCheckpoint.write(tinyMixtral(), dir, 1, DType.F32, Long.MAX_VALUE);
        rewriteWithout(dir, List.of("model.layers.1.block_sparse_moe.experts.2.w3.weight", "model.norm.weight"));
        CheckpointException e = assertThrows(CheckpointException.class, () -> load(dir));
        assertTrue(e.getMessage().contains(dir.toString()), e.getMessage());
        assertTrue(e.getMessage().contains("2 tensor(s)"), e.getMessage());
        assertTrue(e.getMessage().contains("model.layers.1.block_sparse_moe.experts.2.w3.weight"), e.getMessage());
        assertTrue(e.getMessage().contains("model.norm.weight"), e.getMessage());
    }

    @Test
    void shapesThatDisagreeWithConfigAreNamed(@TempDir Path dir) throws IOException {
        RandomCheckpoint.write(tinyMixtral(), dir, 1, DType.F32, Long.MAX_VALUE);
        ObjectNode config = (ObjectNode) JSON.readTree(dir.resolve("config.json").toFile());
        config.put("intermediate_size", 32);
        JSON.writeValue(dir.resolve("config.json").toFile(), config);
        CheckpointException e = assertThrows(CheckpointException.class, () -> load(dir));
        assertTrue(e.getMessage().contains("shapes disagree with config.json"), e.getMessage());
        assertTrue(e.getMessage().contains("model.layers.0.block_sparse_moe.experts.0.w1.weight in model.safetensors "
                + "has shape [24, 16] but config.json implies [32, 16]"), e.getMessage());
    }

    @Test
    void otherModelTypesAreRefusedByName(@TempDir Path dir) throws IOException {
        RandomCheckpoint.write(tinyMixtral(), dir, 1, DType.F32, Long.MAX_VALUE);
        ObjectNode config = (ObjectNode) JSON.readTree(dir.resolve("config.json").toFile());
        config.put("model_type", "llama");
        JSON.writeValue(dir.resolve("config.json").toFile(), config);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> load(dir));
        assertTrue(e.getMessage().contains("config.json") && e.getMessage().contains("\"llama\" is not supported"),
                e.getMessage());
    }

    @Test
    void missingConfigKeyIsNamed(@TempDir Path dir) throws IOException {
        RandomCheckpoint.write(tinyMixtral(), dir, 1, DType.F32, Long.MAX_VALUE);
        ObjectNode config = (ObjectNode) JSON.readTree(dir.resolve("config.json").toFile());
        // num_local_experts has MixtralConfig's default (8); a shape key has none.
        config.remove("intermediate_size");
        JSON.writeValue(dir.resolve("config.json").toFile(), config);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> load(dir));
        assertTrue(e.getMessage().contains("missing key intermediate_size"), e.getMessage());
    }

    @Test
    void pickleCheckpointsAreRefused(@TempDir Path dir) throws IOException {
        RandomCheckpoint.write(tinyMixtral(), dir, 1, DType.F32, Long.MAX_VALUE);
        Files.delete(dir.resolve("model.safetensors"));
        Files.write(dir.resolve("pytorch_model.bin"), new byte[] {(byte) 0x80, 2});
        CheckpointException e = assertThrows(CheckpointException.class, () -> load(dir));
        assertTrue(e.getMessage().contains("pytorch_model.bin") && e.getMessage().contains("safetensors"), e.getMessage());
    }

    @Test
    void shardedBf16CheckpointLoads(@TempDir Path dir) {
        RandomCheckpoint.write(tinyMixtral(), dir, 1, DType.BF16, 4096);
        assertTrue(Files.exists(dir.resolve("model.safetensors.index.json")));
        load(dir);
    }

    /**
     * A NaN or infinite weight is refused at load, naming the shard and the tensor, in every stored dtype (an F16
     * overflow becomes infinity), in the dense and the NF4 path, and in a fused expert tensor read one slice at a time.
     */
    @ParameterizedTest
    @CsvSource({"F32, NaN, 3 NaN value(s)", "F16, 1e30, 3 infinite value(s)", "BF16, NaN, 3 NaN value(s)",
            "BF16, -Infinity, 3 infinite value(s)"})
    void aNonFiniteWeightIsRefusedNamingTheFileAndTensor(DType dtype, float bad, String count, @TempDir Path dir) {
        RandomCheckpoint.write(tinyMixtral(), dir, 1, dtype, 4096);
        String tensor = "model.layers.1.block_sparse_moe.experts.2.w3.weight";
        Path shard = poison(dir, tensor, bad, 5, 7, 11);
        for (MistralCheckpoint.LinearFactory linears : List.of(MistralCheckpoint.DENSE, NF4_LIKE)) {
            CheckpointException e = assertThrows(CheckpointException.class, () -> load(dir, linears));
            assertTrue(e.getMessage().startsWith(shard + ": tensor '" + tensor + "': " + count + " of 384 (the first at "
                    + "element 5)"), e.getMessage());
            assertTrue(shard.getFileName().toString().matches("model-\\d{5}-of-\\d{5}\\.safetensors"), shard.toString());
        }
        // A norm (not a linear layer) and the embedding are checked too.
        RandomCheckpoint.write(tinyMixtral(), dir, 1, dtype, 4096);
        Path normShard = poison(dir, "model.norm.weight", bad, 0, 1, 2);
        CheckpointException norm = assertThrows(CheckpointException.class, () -> load(dir, MistralCheckpoint.DENSE));
        assertTrue(norm.getMessage().startsWith(normShard + ": tensor 'model.norm.weight': " + count), norm.getMessage());
    }

    /** What a quantizing factory sees: the weights after the check (a factory never gets a NaN to quantize). */
    private static final MistralCheckpoint.LinearFactory NF4_LIKE = (name, weight, shape, manager) -> {
        for (float w : weight) {
            assertTrue(Float.isFinite(w), name);
        }
        return MistralCheckpoint.DENSE.create(name, weight, shape, manager);
    };

    @Test
    void aNonFiniteValueInAFusedExpertTensorNamesThatTensor(@TempDir Path dir) {
        ModelConfig config = tinyMixtral();
        // transformers 5's layout: per layer one [experts, 2 x inter, hidden] gate_up_proj and a [experts, hidden,
        // inter] down_proj, written from the random Hub-layout checkpoint.
        Path hub = dir.resolve("hub");
        RandomCheckpoint.write(config, hub, 1, DType.F32, Long.MAX_VALUE);
        Path fused = dir.resolve("fused");
        List<TensorSpec> specs = new ArrayList<>();
        List<float[]> data = new ArrayList<>();
        int e = config.numLocalExperts();
        int inter = config.intermediateSize();
        int hidden = config.hiddenSize();
        try (SafetensorsReader reader = SafetensorsReader.open(hub)) {
            for (String name : reader.names()) {
                if (!name.contains("block_sparse_moe")) {
                    specs.add(new TensorSpec(name, DType.F32, reader.info(name).shape()));
                    data.add(reader.readFloats(name));
                }
            }
            for (int i = 0; i < config.numHiddenLayers(); i++) {
                String moe = "model.layers." + i + ".block_sparse_moe";
                float[] gateUp = new float[2 * e * inter * hidden];
                float[] down = new float[e * hidden * inter];
                for (int j = 0; j < e; j++) {
                    String x = moe + ".experts." + j;
                    System.arraycopy(reader.readFloats(x + ".w1.weight"), 0, gateUp, 2 * j * inter * hidden, inter * hidden);
                    System.arraycopy(reader.readFloats(x + ".w3.weight"), 0, gateUp, (2 * j + 1) * inter * hidden,
                            inter * hidden);
                    System.arraycopy(reader.readFloats(x + ".w2.weight"), 0, down, j * hidden * inter, hidden * inter);
                }
                down[hidden * inter + 3] = Float.NaN; // expert 1 of every layer
                String p = "model.layers." + i + ".mlp";
                specs.add(new TensorSpec(p + ".gate.weight", DType.F32, new long[] {e, hidden}));
                data.add(reader.readFloats(moe + ".gate.weight"));
                specs.add(new TensorSpec(p + ".experts.gate_up_proj", DType.F32, new long[] {e, 2L * inter, hidden}));
                data.add(gateUp);
                specs.add(new TensorSpec(p + ".experts.down_proj", DType.F32, new long[] {e, hidden, inter}));
                data.add(down);
            }
        }
        try {
            Files.createDirectories(fused);
            Files.copy(hub.resolve("config.json"), fused.resolve("config.json"));
        } catch (IOException ex) {
            throw new java.io.UncheckedIOException(ex);
        }
        SafetensorsWriter.writeFile(fused.resolve("model.safetensors"), specs, spec -> data.get(specs.indexOf(spec)));
        CheckpointException ex = assertThrows(CheckpointException.class, () -> load(fused, MistralCheckpoint.DENSE));
        assertTrue(ex.getMessage().startsWith(fused.resolve("model.safetensors") + ": tensor "
                + "'model.layers.0.mlp.experts.down_proj': 1 NaN value(s) of " + (e * hidden * inter)
                + " (the first at element " + (hidden * inter + 3) + ")"), ex.getMessage());
    }

    /** Writes {@code value} at the given elements of {@code tensor}, in its shard and dtype; returns the shard. */
    private static Path poison(Path dir, String tensor, float value, int... elements) {
        Path shard;
        try (SafetensorsReader all = SafetensorsReader.open(dir)) {
            shard = all.info(tensor).file();
        }
        List<TensorSpec> specs = new ArrayList<>();
        List<float[]> data = new ArrayList<>();
        try (SafetensorsReader reader = SafetensorsReader.open(shard)) {
            for (String name : reader.names()) {
                specs.add(new TensorSpec(name, reader.info(name).dtype(), reader.info(name).shape()));
                float[] values = reader.readFloats(name);
                if (name.equals(tensor)) {
                    for (int element : elements) {
                        values[element] = value;
                    }
                }
                data.add(values);
            }
        }
        SafetensorsWriter.writeFile(shard, specs, spec -> data.get(specs.indexOf(spec)));
        return shard;
    }

    private static void load(Path dir, MistralCheckpoint.LinearFactory linears) {
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(dir, manager, linears)) {
            assertTrue(model.config().isMixtureOfExperts());
        }
    }

    private static void load(Path dir) {
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(dir, manager)) {
            assertTrue(model.config().isMixtureOfExperts());
        }
    }

    @Test
    void weightsStoredAsFp8AreRefusedBeforeLoadingNamingTensorAndDtype(@TempDir Path dir) throws IOException {
        RandomCheckpoint.write(tinyMixtral(), dir, 1, DType.F32, Long.MAX_VALUE);
        Path file = dir.resolve("model.safetensors");
        List<TensorSpec> specs = new ArrayList<>();
        List<float[]> data = new ArrayList<>();
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            for (String name : reader.names()) {
                DType dtype = name.equals("model.layers.0.self_attn.q_proj.weight") ? DType.F8_E4M3 : DType.F32;
                specs.add(new TensorSpec(name, dtype, reader.info(name).shape()));
                data.add(reader.readFloats(name));
            }
        }
        SafetensorsWriter.writeFile(file, specs, new SafetensorsWriter.TensorSource() {
            @Override
            public float[] floats(TensorSpec spec) {
                return data.get(specs.indexOf(spec));
            }

            @Override
            public byte[] rawBytes(TensorSpec spec) {
                return new byte[(int) spec.byteLength()];
            }
        });
        CheckpointException e = assertThrows(CheckpointException.class, () -> load(dir));
        assertTrue(e.getMessage().contains("model.layers.0.self_attn.q_proj.weight in model.safetensors is F8_E4M3")
                && e.getMessage().contains("F32, F16 or BF16"), e.getMessage());
    }

    @Test
    void preQuantizedCheckpointsAreRefusedNamingQuantizationConfig(@TempDir Path dir) throws IOException {
        RandomCheckpoint.write(tinyMixtral(), dir, 1, DType.F32, Long.MAX_VALUE);
        ObjectNode config = (ObjectNode) JSON.readTree(dir.resolve("config.json").toFile());
        config.putObject("quantization_config").put("quant_method", "gptq").put("bits", 4);
        JSON.writeValue(dir.resolve("config.json").toFile(), config);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> load(dir));
        assertTrue(e.getMessage().contains("config.json") && e.getMessage().contains("quantization_config")
                && e.getMessage().contains("gptq") && e.getMessage().contains("full-precision"), e.getMessage());
    }

    private static void rewriteWithout(Path dir, List<String> dropped) {
        Path file = dir.resolve("model.safetensors");
        List<TensorSpec> specs = new ArrayList<>();
        List<float[]> data = new ArrayList<>();
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            for (String name : reader.names()) {
                if (!dropped.contains(name)) {
                    specs.add(new TensorSpec(name, DType.F32, reader.info(name).shape()));
                    data.add(reader.readFloats(name));
                }
            }
        }
        SafetensorsWriter.writeFile(file, specs, spec -> data.get(specs.indexOf(spec)));
    }
}
