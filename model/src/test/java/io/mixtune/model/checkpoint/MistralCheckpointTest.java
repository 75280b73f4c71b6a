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
        config.remove("num_local_experts");
        JSON.writeValue(dir.resolve("config.json").toFile(), config);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> load(dir));
        assertTrue(e.getMessage().contains("missing key num_local_experts"), e.getMessage());
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

    private static void load(Path dir) {
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(dir, manager)) {
            assertTrue(model.config().isMixtureOfExperts());
        }
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
