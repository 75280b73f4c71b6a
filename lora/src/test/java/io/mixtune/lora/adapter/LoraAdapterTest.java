package io.mixtune.lora.adapter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.DenseLinear;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class LoraAdapterTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    static ModelConfig mixtral() {
        return new ModelConfig(ModelConfig.ModelType.MIXTRAL, 32, 48, 2, 4, 2, 8, 61, 1e-5, 1e4, null, 64, false,
                3, 2, 0.02, 1, 2);
    }

    static ModelConfig mistral() {
        return new ModelConfig(ModelConfig.ModelType.MISTRAL, 32, 48, 2, 4, 2, 8, 61, 1e-5, 1e4, 16, 64, false,
                0, 0, 0.0, 1, 2);
    }

    @Test
    void forwardIsBasePlusScaledBA() {
        try (NDManager manager = NDManager.newBaseManager()) {
            float[] w = new float[3 * 4];
            float[] a = new float[2 * 4];
            float[] b = new float[3 * 2];
            for (int i = 0; i < w.length; i++) {
                w[i] = i * 0.1f - 0.5f;
            }
            for (int i = 0; i < a.length; i++) {
                a[i] = (i % 3) * 0.2f - 0.1f;
            }
            for (int i = 0; i < b.length; i++) {
                b[i] = 0.3f - i * 0.05f;
            }
            float[] x = {1f, -2f, 0.5f, 3f};
            LoraLinear lora = new LoraLinear(new DenseLinear(manager.create(w, new Shape(3, 4))));
            lora.add("default", new LoraLinear.Adapter(manager.create(a, new Shape(2, 4)), manager.create(b, new Shape(3, 2)),
                    2.5, 0.0));
            float[] y = lora.forward(manager.create(x, new Shape(1, 4))).toFloatArray();
            for (int o = 0; o < 3; o++) {
                double expected = 0;
                for (int i = 0; i < 4; i++) {
                    expected += w[o * 4 + i] * x[i];
                }
                for (int k = 0; k < 2; k++) {
                    double ax = 0;
                    for (int i = 0; i < 4; i++) {
                        ax += a[k * 4 + i] * x[i];
                    }
                    expected += 2.5 * b[o * 2 + k] * ax;
                }
                assertEquals(expected, y[o], 1e-5);
            }
            lora.setEnabled(false);
            assertEquals(w[0] * 1f + w[1] * -2f + w[2] * 0.5f + w[3] * 3f, lora.forward(manager.create(x, new Shape(1, 4)))
                    .toFloatArray()[0], 1e-5, "switched off, the layer is its base");
        }
    }

    /**
     * PEFT's LoraLayer: {@code base(x) + lora_B(lora_A(lora_dropout(x))) * scaling}, the dropout on A's input only (the
     * base sees x whole), keeping each element with probability 1 - p scaled by 1 / (1 - p), and off in evaluation.
     * A and B the identity make the update the dropped input itself, exactly.
     */
    @Test
    void dropoutTakesOnlyTheAdaptersInputAndScalesWhatItKeeps() {
        int n = 64;
        try (NDManager manager = NDManager.newBaseManager()) {
            float[] w = new float[n * n];
            float[] x = new float[n];
            for (int i = 0; i < w.length; i++) {
                w[i] = (float) Math.sin(i) * 0.1f;
            }
            for (int i = 0; i < n; i++) {
                x[i] = 1 + i * 0.25f;
            }
            NDArray identity = manager.eye(n);
            LoraLinear lora = new LoraLinear(new DenseLinear(manager.create(w, new Shape(n, n))));
            lora.add("default", new LoraLinear.Adapter(identity, identity.duplicate(), 1.0, 0.5));
            NDArray input = manager.create(x, new Shape(1, n));
            float[] base = lora.base().forward(input).toFloatArray();
            lora.setTraining(true);
            float[] trained = lora.forward(input).toFloatArray();
            int dropped = 0;
            for (int i = 0; i < n; i++) {
                float update = trained[i] - base[i];
                boolean kept = Math.abs(update - 2 * x[i]) <= 1e-4 * x[i];
                assertTrue(kept || Math.abs(update) <= 1e-4, "element " + i + ": update " + update + " is neither 0 nor "
                        + "x / (1 - p) = " + 2 * x[i]);
                dropped += kept ? 0 : 1;
            }
            assertTrue(dropped > 0 && dropped < n, dropped + " of " + n + " dropped at p = 0.5");
            lora.setTraining(false);
            float[] evaluated = lora.forward(input).toFloatArray();
            for (int i = 0; i < n; i++) {
                assertEquals(x[i], evaluated[i] - base[i], 1e-4, "no dropout in evaluation, element " + i);
            }
        }
    }

    @Test
    void allLinearTargetsEveryExpertButNotRouterOrHead(@TempDir Path dir) {
        RandomCheckpoint.write(mixtral(), dir, 1, DType.F32, Long.MAX_VALUE);
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(dir, manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", LoraConfig.of(4, 8, List.of("all-linear")), LoraModel.Init.PEFT_DEFAULT, 0);
            assertEquals(2 * (4 + 3 * 3), lora.layers().size());
            assertTrue(lora.layers().containsKey("model.layers.1.block_sparse_moe.experts.2.w3"));
            assertTrue(lora.layers().keySet().stream().noneMatch(n -> n.endsWith(".gate") || n.equals("lm_head")));
            LoraLinear.Adapter q = lora.layers().get("model.layers.0.self_attn.q_proj").adapter("default");
            float bound = (float) (1 / Math.sqrt(32));
            for (float v : q.a().toFloatArray()) {
                assertTrue(Math.abs(v) <= bound, "A is U(-1/sqrt(in), 1/sqrt(in))");
            }
            assertEquals(0f, q.b().abs().max().getFloat(), "B starts at zero");
        }
    }

    @Test
    void peftDefaultInitLeavesTheModelUnchangedAndSavedAdaptersReload(@TempDir Path dir) throws Exception {
        Path modelDir = dir.resolve("model");
        RandomCheckpoint.write(mixtral(), modelDir, 1, DType.F32, Long.MAX_VALUE, 0.3);
        NDArray baseLogits;
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(modelDir, manager)) {
            NDArray ids = manager.create(new long[][] {{1, 9, 33, 4, 58, 12}});
            NDArray positions = manager.arange(0, 6, 1, DataType.INT64).reshape(1, 6);
            float[] base = model.forward(ids, positions, null).toFloatArray();
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", LoraConfig.of(4, 8, List.of("all-linear")), LoraModel.Init.PEFT_DEFAULT, 3);
            assertArrayClose(base, model.forward(ids, positions, null).toFloatArray(), 0, "B = 0 changes nothing");
            // PEFT's kaiming_uniform_(A, a=sqrt(5)): U(-b, b) with b = sqrt(2 / (1 + 5)) sqrt(3 / in) = 1 / sqrt(in)
            for (String module : List.of("model.layers.0.self_attn.q_proj", "model.layers.1.block_sparse_moe.experts.2.w2")) {
                LoraLinear.Adapter adapter = lora.layers().get(module).adapter("default");
                double bound = 1 / Math.sqrt(lora.layers().get(module).inFeatures());
                float[] a = adapter.a().toFloatArray();
                double largest = 0;
                double squares = 0;
                for (float value : a) {
                    largest = Math.max(largest, Math.abs(value));
                    squares += value * value;
                }
                assertTrue(largest <= bound && largest > 0.9 * bound, module + ": max |A| " + largest + ", bound " + bound);
                assertEquals(bound / Math.sqrt(3), Math.sqrt(squares / a.length), 0.15 * bound, module + ": A's spread");
                assertEquals(0f, adapter.b().abs().max().getFloat(), module + ": B starts at 0");
            }

            LoraConfig config = new LoraConfig(4, 8, 0.05, List.of("q_proj", "v_proj", "w1", "w2"), true,
                    Map.of("w2", 2), Map.of("v_proj", 3.0));
            lora.addAdapter("trained", config, LoraModel.Init.RANDOM, 4);
            lora.setActiveAdapter("trained");
            float[] adapted = model.forward(ids, positions, null).toFloatArray();
            assertTrue(maxDiff(base, adapted) > 1e-3, "a random B changes the logits");
            assertEquals(2, lora.layers().get("model.layers.0.block_sparse_moe.experts.1.w2").adapter("trained").rank());
            assertEquals(3 / Math.sqrt(4), lora.layers().get("model.layers.1.self_attn.v_proj").adapter("trained").scale(),
                    1e-12, "alpha_pattern with rsLoRA: alpha / sqrt(r)");
            lora.setAdaptersEnabled(false);
            assertArrayClose(base, model.forward(ids, positions, null).toFloatArray(), 0, "adapters off");
            lora.setAdaptersEnabled(true);

            Path adapterDir = dir.resolve("adapter");
            PeftAdapter.save(lora, "trained", adapterDir, "tiny-mixtral");
            ObjectNode saved = (ObjectNode) JSON.readTree(adapterDir.resolve("adapter_config.json").toFile());
            assertEquals("LORA", saved.get("peft_type").asText());
            assertEquals("CAUSAL_LM", saved.get("task_type").asText());
            assertEquals("[\"q_proj\",\"v_proj\",\"w1\",\"w2\"]", saved.get("target_modules").toString());
            assertEquals(2, saved.get("rank_pattern").get("w2").asInt());
            // rsLoRA on Mixtral is written as plain LoRA, each alpha times sqrt(its rank) (PeftConfigTest)
            assertTrue(!saved.get("use_rslora").asBoolean());
            assertEquals(3 * Math.sqrt(4), saved.get("alpha_pattern").get("v_proj").asDouble(), 1e-12);

            try (NDManager other = NDManager.newBaseManager(); CausalLm reloaded = MistralCheckpoint.load(modelDir, other)) {
                LoraModel reloadedLora = new LoraModel(reloaded);
                PeftAdapter.load(reloadedLora, adapterDir, "default");
                float[] again = reloaded.forward(other.create(new long[][] {{1, 9, 33, 4, 58, 12}}),
                        other.arange(0, 6, 1, DataType.INT64).reshape(1, 6), null).toFloatArray();
                assertArrayClose(adapted, again, 1e-6, "saved and reloaded adapter");
            }
        }
    }

    /**
     * An adapter is written from its arrays' memory, not from Java copies of them: the Java heap holds no adapter at
     * any moment, whatever its size (a Mixtral adapter on every expert is about 1 GB in float32).
     */
    @Test
    void savingAnAdapterCopiesNoArrayIntoTheJavaHeap(@TempDir Path dir) throws Exception {
        ModelConfig config = new ModelConfig(ModelConfig.ModelType.MISTRAL, 512, 1024, 1, 8, 2, 64, 64, 1e-5, 1e4,
                null, 64, false, 0, 0, 0.0, 1, 2);
        Path modelDir = dir.resolve("model");
        RandomCheckpoint.write(config, modelDir, 1, DType.F32, Long.MAX_VALUE, 0.3);
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(modelDir, manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", LoraConfig.of(64, 64, List.of("all-linear")), LoraModel.Init.RANDOM, 0);
            long adapterBytes = lora.parameters("default").stream().mapToLong(a -> a.size() * Float.BYTES).sum();
            // The first save loads the writer's classes (megabytes of one-time allocation).
            PeftAdapter.save(lora, "default", dir.resolve("first"), "m");
            long before = allocatedBytes();
            PeftAdapter.save(lora, "default", dir.resolve("adapter"), "m");
            long allocated = allocatedBytes() - before;

            assertTrue(allocated < adapterBytes / 8, "saving an adapter of " + adapterBytes + " bytes allocated "
                    + allocated + " bytes of Java heap");
            try (SafetensorsReader saved = SafetensorsReader.open(dir.resolve("adapter").resolve(PeftAdapter.WEIGHTS_FILE))) {
                NDArray a = lora.layers().get("model.layers.0.mlp.down_proj").adapter("default").a();
                assertArrayClose(a.toFloatArray(), saved.readFloats(PeftAdapter.aKey("model.layers.0.mlp.down_proj")),
                        0, "down_proj's A as written");
            }
        }
    }

    /** Bytes this thread has allocated on the Java heap so far (HotSpot counts them per thread). */
    private static long allocatedBytes() {
        return ((com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean()).getCurrentThreadAllocatedBytes();
    }

    @Test
    void adaptersThatDoNotFitTheModelAreRefusedWithTheModuleNamed(@TempDir Path dir) throws Exception {
        Path mistralDir = dir.resolve("mistral");
        Path mixtralDir = dir.resolve("mixtral");
        RandomCheckpoint.write(mistral(), mistralDir, 1, DType.F32, Long.MAX_VALUE);
        RandomCheckpoint.write(mixtral(), mixtralDir, 1, DType.F32, Long.MAX_VALUE);
        Path adapterDir = dir.resolve("adapter");
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(mistralDir, manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", LoraConfig.of(4, 8, List.of("all-linear")), LoraModel.Init.RANDOM, 0);
            PeftAdapter.save(lora, "default", adapterDir, "mistral");
        }
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(mixtralDir, manager)) {
            IllegalArgumentException wrongArchitecture = assertThrows(IllegalArgumentException.class,
                    () -> PeftAdapter.load(new LoraModel(model), adapterDir, "default"));
            assertTrue(wrongArchitecture.getMessage().contains("has no linear layer model.layers.0.mlp.down_proj"),
                    wrongArchitecture.getMessage());
        }
        ObjectNode config = (ObjectNode) JSON.readTree(adapterDir.resolve("adapter_config.json").toFile());
        config.put("r", 8);
        JSON.writeValue(adapterDir.resolve("adapter_config.json").toFile(), config);
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(mistralDir, manager)) {
            IllegalArgumentException wrongRank = assertThrows(IllegalArgumentException.class,
                    () -> PeftAdapter.load(new LoraModel(model), adapterDir, "default"));
            assertTrue(wrongRank.getMessage().contains("model.layers.0.mlp.down_proj: lora_A [4, 48] and lora_B [32, 4], "
                    + "expected [8, 48] and [32, 8] (rank 8"), wrongRank.getMessage());

            config.put("r", "eight");
            JSON.writeValue(adapterDir.resolve("adapter_config.json").toFile(), config);
            IllegalArgumentException wrongType = assertThrows(IllegalArgumentException.class,
                    () -> PeftAdapter.load(new LoraModel(model), adapterDir, "default"));
            assertTrue(wrongType.getMessage().contains("adapter_config.json: field r must be an integer, got \"eight\""),
                    wrongType.getMessage());

            config.remove("r");
            JSON.writeValue(adapterDir.resolve("adapter_config.json").toFile(), config);
            assertTrue(assertThrows(IllegalArgumentException.class,
                    () -> PeftAdapter.load(new LoraModel(model), adapterDir, "default")).getMessage()
                    .contains("missing field r"));

            Files.writeString(adapterDir.resolve("adapter_config.json"),
                    "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"qproj\"]}");
            IllegalArgumentException unknownTarget = assertThrows(IllegalArgumentException.class,
                    () -> PeftAdapter.load(new LoraModel(model), adapterDir, "default"));
            assertTrue(unknownTarget.getMessage().contains("unknown lora target \"qproj\"")
                    && unknownTarget.getMessage().contains("q_proj"), unknownTarget.getMessage());
        }
    }

    /** LoraHub swaps candidate adapters into one model: a put replaces the adapter of that name, freeing the old one. */
    @Test
    void putAdapterReplacesTheAdapterOfThatNameAndRemoveGoesBackToTheBase(@TempDir Path dir) {
        RandomCheckpoint.write(mistral(), dir, 1, DType.F32, Long.MAX_VALUE, 0.3);
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(dir, manager)) {
            NDArray ids = manager.create(new long[][] {{1, 9, 33, 4, 58, 12}});
            NDArray positions = manager.arange(0, 6, 1, DataType.INT64).reshape(1, 6);
            float[] base = model.forward(ids, positions, null).toFloatArray();
            LoraModel lora = new LoraModel(model);
            LoraConfig config = LoraConfig.of(2, 2, List.of("q_proj"));
            lora.addAdapter("random", config, LoraModel.Init.RANDOM, 5);
            Map<String, float[][]> twice = new java.util.LinkedHashMap<>();
            Map<String, float[][]> zero = new java.util.LinkedHashMap<>();
            for (String module : lora.layers().keySet()) {
                LoraLinear.Adapter a = lora.layers().get(module).adapter("random");
                float[] b = a.b().toFloatArray();
                for (int i = 0; i < b.length; i++) {
                    b[i] *= 2;
                }
                twice.put(module, new float[][] {a.a().toFloatArray(), b});
                zero.put(module, new float[][] {a.a().toFloatArray(), new float[b.length]});
            }
            float[] once = model.forward(ids, positions, null).toFloatArray();

            lora.putAdapter("candidate", config, zero);
            assertArrayClose(base, model.forward(ids, positions, null).toFloatArray(), 0, "B = 0 is the base");
            lora.putAdapter("candidate", config, twice);
            float[] doubled = model.forward(ids, positions, null).toFloatArray();
            assertTrue(maxDiff(once, doubled) > 1e-3, "the second put replaced the first");
            assertEquals(List.of("random", "candidate"), List.copyOf(lora.adapterNames()));
            lora.removeAdapter("candidate");
            assertArrayClose(once, model.forward(ids, positions, null).toFloatArray(), 0, "back to the first adapter");
        }
    }

    @Test
    void targetsMatchPeftStyleByNameOrDottedPathSuffix() {
        LoraConfig paths = LoraConfig.of(4, 8, List.of("model.layers.0.self_attn.o_proj", "experts.1.w2", "w3"));
        assertTrue(paths.targets("model.layers.0.self_attn.o_proj"));
        assertTrue(!paths.targets("model.layers.1.self_attn.o_proj"));
        assertTrue(paths.targets("model.layers.1.block_sparse_moe.experts.1.w2"));
        assertTrue(!paths.targets("model.layers.1.block_sparse_moe.experts.11.w2"), "suffixes match at dots only");
        assertTrue(paths.targets("model.layers.1.block_sparse_moe.experts.0.w3"));
        assertTrue(!paths.targets("lm_head"));
        IllegalArgumentException typo = assertThrows(IllegalArgumentException.class,
                () -> LoraConfig.of(4, 8, List.of("model.layers.0.self_attn.oproj")));
        assertTrue(typo.getMessage().contains("unknown lora target"), typo.getMessage());
    }

    @Test
    void mixtralRsloraIsWrittenAsPlainLoraWithTheSameScale(@TempDir Path dir) throws Exception {
        Path modelDir = dir.resolve("model");
        RandomCheckpoint.write(mixtral(), modelDir, 1, DType.F32, Long.MAX_VALUE);
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(modelDir, manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", new LoraConfig(16, 8, 0, List.of("all-linear"), true, Map.of(), Map.of()),
                    LoraModel.Init.RANDOM, 1);
            PeftAdapter.save(lora, "default", dir.resolve("adapter"), "m");
            ObjectNode saved = (ObjectNode) JSON.readTree(dir.resolve("adapter/adapter_config.json").toFile());
            assertEquals(32.0, saved.get("lora_alpha").asDouble(), "alpha sqrt(r) = 8 x 4");
            assertTrue(!saved.get("use_rslora").asBoolean());
            LoraModel reloaded = new LoraModel(model);
            PeftAdapter.load(reloaded, dir.resolve("adapter"), "again");
            assertEquals(8 / Math.sqrt(16),
                    reloaded.layers().get("model.layers.0.block_sparse_moe.experts.2.w1").adapter("again").scale(), 1e-12);
        }
    }

    static void assertArrayClose(float[] expected, float[] actual, double tolerance, String what) {
        assertEquals(expected.length, actual.length);
        double worst = maxDiff(expected, actual);
        assertTrue(worst <= tolerance, what + ": differs by " + worst);
    }

    static double maxDiff(float[] a, float[] b) {
        double worst = 0;
        for (int i = 0; i < a.length; i++) {
            worst = Math.max(worst, Math.abs(a[i] - b[i]));
        }
        return worst;
    }
}
