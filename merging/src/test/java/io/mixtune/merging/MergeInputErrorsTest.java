package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;

/**
 * Bad inputs fail with a message that names the file or key and what was expected, before anything is written: no
 * {@code out}, no {@code out.tmp-*} left behind.
 */
class MergeInputErrorsTest {
    private static final Path CHECKPOINTS = MergeGoldenTest.GOLDEN.resolve("checkpoints");
    private static final Path ADAPTERS = MergeGoldenTest.GOLDEN.resolve("adapters");
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path dir;

    private MergeConfig linear(Path... models) {
        return new MergeConfig(MergeMethod.LINEAR, null, Stream.of(models).map(MergeConfig.Model::of).toList(), null,
                null, null, null, null, dir.resolve("out"));
    }

    /** Runs the merge, expects it to fail with every fragment in the message, and nothing written. */
    private void assertRefused(MergeConfig config, String... fragments) throws IOException {
        assertRefused(() -> ModelMerge.run(config, false, Long.MAX_VALUE), fragments);
    }

    private void assertRefused(Executable merge, String... fragments) throws IOException {
        // IllegalArgumentException, or the reader's CheckpointException for damaged files.
        RuntimeException e = assertThrows(RuntimeException.class, merge);
        for (String fragment : fragments) {
            assertTrue(e.getMessage().contains(fragment), "'" + fragment + "' not in: " + e.getMessage());
        }
        try (Stream<Path> left = Files.list(dir)) {
            assertFalse(left.anyMatch(p -> p.getFileName().toString().startsWith("out")), "nothing written");
        }
    }

    /** A copy of a golden checkpoint with its config.json edited. */
    private Path copyWithConfig(Path source, String name, Consumer<ObjectNode> edit) throws IOException {
        Path copy = copy(source, name);
        ObjectNode config = (ObjectNode) JSON.readTree(copy.resolve("config.json").toFile());
        edit.accept(config);
        JSON.writeValue(copy.resolve("config.json").toFile(), config);
        return copy;
    }

    private Path copy(Path source, String name) throws IOException {
        Path copy = dir.resolve("inputs").resolve(name);
        Files.createDirectories(copy);
        try (Stream<Path> files = Files.list(source)) {
            for (Path file : files.toList()) {
                Files.copy(file, copy.resolve(file.getFileName()));
            }
        }
        return copy;
    }

    /** A copy of m0 whose tensors are rewritten by {@code specs} (the same values where the shape allows). */
    private Path copyWithTensors(String name, List<TensorSpec> specs) throws IOException {
        Path copy = copy(CHECKPOINTS.resolve("m0"), name);
        Files.delete(copy.resolve("model.safetensors"));
        try (SafetensorsReader m0 = SafetensorsReader.open(CHECKPOINTS.resolve("m0"))) {
            SafetensorsWriter.writeCheckpoint(copy, specs, Long.MAX_VALUE, new SafetensorsWriter.TensorSource() {
                @Override
                public float[] floats(TensorSpec spec) {
                    return new float[(int) spec.numel()];
                }

                @Override
                public byte[] rawBytes(TensorSpec spec) {
                    byte[] bytes = new byte[(int) spec.byteLength()];
                    m0.bytes(spec.name()).get(bytes);
                    return bytes;
                }
            });
        }
        return copy;
    }

    private static List<TensorSpec> m0Specs() {
        try (SafetensorsReader m0 = SafetensorsReader.open(CHECKPOINTS.resolve("m0"))) {
            List<TensorSpec> specs = new ArrayList<>();
            for (String name : m0.names()) {
                specs.add(new TensorSpec(name, m0.info(name).dtype(), m0.info(name).shape()));
            }
            return specs;
        }
    }

    @Test
    void differentArchitecturesAreRefused() throws IOException {
        Path wider = copyWithConfig(CHECKPOINTS.resolve("m1"), "wider", c -> c.put("hidden_size", 16));
        assertRefused(linear(CHECKPOINTS.resolve("m0"), wider), wider.resolve("config.json").toString(),
                "hidden_size is 16 but 8", "different architectures");
    }

    @Test
    void differentShapesAndTensorSetsAreRefused() throws IOException {
        List<TensorSpec> reshaped = new ArrayList<>();
        for (TensorSpec spec : m0Specs()) {
            reshaped.add(spec.name().equals("lm_head.weight") ? new TensorSpec(spec.name(), spec.dtype(), new long[] {8, 12})
                    : spec);
        }
        Path transposed = copyWithTensors("transposed", reshaped);
        assertRefused(linear(CHECKPOINTS.resolve("m0"), transposed), "tensor 'lm_head.weight' has shape [8, 12] but"
                + " [12, 8]", "transposed");

        List<TensorSpec> fewer = m0Specs().stream().filter(s -> !s.name().equals("lm_head.weight")).toList();
        Path headless = copyWithTensors("headless", fewer);
        assertRefused(linear(CHECKPOINTS.resolve("m0"), headless), "headless", "missing 1 (lm_head.weight)");
    }

    @Test
    void differentTokenizersAreRefused() throws IOException {
        Path other = copy(CHECKPOINTS.resolve("m1"), "retokenized");
        Files.writeString(other.resolve("tokenizer.json"), "{\"version\": \"1.0\", \"model\": {}}\n");
        assertRefused(linear(CHECKPOINTS.resolve("m0"), other), other.resolve("tokenizer.json").toString(),
                "different tokenizers");
    }

    @Test
    void missingFilesAreNamed() throws IOException {
        Path absent = dir.resolve("absent");
        assertRefused(linear(CHECKPOINTS.resolve("m0"), absent), absent + ": no such directory");
        Path empty = Files.createDirectories(dir.resolve("inputs/empty"));
        assertRefused(linear(CHECKPOINTS.resolve("m0"), empty), empty.toString(), "neither a model (config.json");
        Path noWeights = copy(ADAPTERS.resolve("a0"), "no-weights");
        Files.delete(noWeights.resolve("adapter_model.safetensors"));
        assertRefused(linear(ADAPTERS.resolve("a1"), noWeights), noWeights.resolve("adapter_model.safetensors")
                + ": missing");
        Path noShard = copy(CHECKPOINTS.resolve("m2"), "no-shard");
        Files.delete(noShard.resolve("model-00002-of-00002.safetensors"));
        assertRefused(linear(CHECKPOINTS.resolve("m0"), noShard), "model-00002-of-00002.safetensors", "does not exist");
    }

    @Test
    void weightsMustMatchTheModelsAndDensityLieInZeroOne() {
        IllegalArgumentException count = assertThrows(IllegalArgumentException.class,
                () -> MergeConfig.models(List.of(Path.of("a"), Path.of("b"), Path.of("c")), List.of(1.0, 2.0)));
        assertEquals("weights has 2 values for 3 models: give one weight per model, in the same order",
                count.getMessage());
        for (double density : new double[] {0, -0.5, 1.5, Double.NaN}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> new MergeConfig.Parameters(null, density, null, null, null, null, null, null));
            assertTrue(e.getMessage().startsWith("density must lie in (0, 1]"), e.getMessage());
        }
        assertThrows(IllegalArgumentException.class, () -> new MergeConfig.ModelParameters(1.0, 0.0));
    }

    @Test
    void settingsAMethodDoesNotUseAreRefused() {
        List<MergeConfig.Model> two = List.of(MergeConfig.Model.of(Path.of("a")), MergeConfig.Model.of(Path.of("b")));
        Path out = Path.of("out");
        assertEquals("linear takes no density (only the sparsifying task-vector methods do: ties, dare_*, breadcrumbs*,"
                + " della*)", assertThrows(
                IllegalArgumentException.class, () -> new MergeConfig(MergeMethod.LINEAR, null, two,
                        new MergeConfig.Parameters(null, 0.5, null, null, null, null, null, null), null, null, null,
                        null, out)).getMessage());
        assertTrue(assertThrows(IllegalArgumentException.class, () -> new MergeConfig(MergeMethod.EMA, null, two, null,
                null, null, null, null, out)).getMessage().startsWith("ema needs decay"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> new MergeConfig(MergeMethod.LAWA, null, two, null,
                null, null, null, null, out)).getMessage().startsWith("lawa averages the latest k checkpoints"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> new MergeConfig(MergeMethod.SLERP, null,
                List.of(two.get(0)), new MergeConfig.Parameters(null, null, null, null, 0.5, null, null, null), null,
                null, null, null, out)).getMessage().startsWith("slerp interpolates exactly two models"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> new MergeConfig(MergeMethod.SWA, null, two,
                new MergeConfig.Parameters(2.0, null, null, null, null, null, null, null), null, null, null, null,
                out)).getMessage().startsWith("swa takes no weights"));
        assertEquals("unknown merge method 'tie' (did you mean 'ties'?): expected one of linear, swa, lawa, ema, warm,"
                + " task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties, della, della_linear,"
                + " slerp, model_stock, passthrough, nuslerp, multislerp, nearswap, karcher, sce, arcee_fusion, ram,"
                + " ramplus_tl",
                assertThrows(IllegalArgumentException.class, () -> MergeMethod.parse("tie")).getMessage());
    }

    @Test
    void taskVectorMethodsNeedABaseForCheckpoints() throws IOException {
        MergeConfig ties = new MergeConfig(MergeMethod.TIES, null, List.of(MergeConfig.Model.of(CHECKPOINTS.resolve("m0")),
                MergeConfig.Model.of(CHECKPOINTS.resolve("m1"))), null, null, null, null, null, dir.resolve("out"));
        assertRefused(ties, "ties measures task vectors from base_model, which is missing");
    }

    @Test
    void warmRefusesAnyConfigDifferenceWhereLinearOnlyChecksTheArchitecture() throws IOException {
        Path retuned = copyWithConfig(CHECKPOINTS.resolve("m1"), "retuned", c -> c.put("rope_theta", 500000.0));
        MergeConfig warm = new MergeConfig(MergeMethod.WARM, null, List.of(MergeConfig.Model.of(CHECKPOINTS.resolve("m0")),
                MergeConfig.Model.of(retuned)), null, null, null, null, null, dir.resolve("out"));
        assertRefused(warm, retuned.resolve("config.json").toString(), "rope_theta is 500000.0 but 10000.0",
                "one initialisation");
        ModelMerge.run(linear(CHECKPOINTS.resolve("m0"), retuned), false, Long.MAX_VALUE);
        assertTrue(Files.isRegularFile(dir.resolve("out/model.safetensors")));
    }

    @Test
    void adaptersAndModelsDoNotMix() throws IOException {
        assertRefused(linear(CHECKPOINTS.resolve("m0"), ADAPTERS.resolve("a0")), ADAPTERS.resolve("a0")
                + ": is a PEFT adapter but", "merge adapters with adapters");
        MergeConfig ties = new MergeConfig(MergeMethod.TIES, null, List.of(MergeConfig.Model.of(ADAPTERS.resolve("a0")),
                MergeConfig.Model.of(ADAPTERS.resolve("a1"))), null, null, null, null, null, dir.resolve("out"));
        assertRefused(ties, "ties on PEFT adapters is not supported", "mixtune merge-adapter");
        MergeConfig ranked = new MergeConfig(MergeMethod.LINEAR, null, List.of(MergeConfig.Model.of(
                CHECKPOINTS.resolve("m0")), MergeConfig.Model.of(CHECKPOINTS.resolve("m1"))), null, null, 4, null, null,
                dir.resolve("out"));
        assertRefused(ranked, "rank re-compresses PEFT adapters");
    }

    @Test
    void anAdapterForOtherShapesIsRefused() throws IOException {
        Path wide = copy(ADAPTERS.resolve("a0"), "wide");
        String key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
        String bKey = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
        String down = "base_model.model.model.layers.0.mlp.down_proj.lora_";
        List<TensorSpec> specs = List.of(new TensorSpec(key, DType.F32, new long[] {2, 9}),
                new TensorSpec(bKey, DType.F32, new long[] {8, 2}),
                new TensorSpec(down + "A.weight", DType.F32, new long[] {2, 16}),
                new TensorSpec(down + "B.weight", DType.F32, new long[] {8, 2}));
        SafetensorsWriter.writeFile(wide.resolve("adapter_model.safetensors"), specs, s -> new float[(int) s.numel()]);
        assertRefused(linear(ADAPTERS.resolve("a0"), wide), wide.resolve("adapter_model.safetensors").toString(),
                "module model.layers.0.self_attn.q_proj is [out, in] = [8, 9] but [8, 8]");
    }

    /** A copy of adapter a0 (hidden size 8, MLP 16, r 2) with these modules, as [out, in], and target_modules. */
    private Path adapter(String name, List<String> targets, Object... modulesAndShapes) throws IOException {
        Path copy = copy(ADAPTERS.resolve("a0"), name);
        List<TensorSpec> specs = new ArrayList<>();
        for (int i = 0; i < modulesAndShapes.length; i += 3) {
            String prefix = "base_model.model." + modulesAndShapes[i] + ".lora_";
            long out = (Integer) modulesAndShapes[i + 1];
            long in = (Integer) modulesAndShapes[i + 2];
            specs.add(new TensorSpec(prefix + "A.weight", DType.F32, new long[] {2, in}));
            specs.add(new TensorSpec(prefix + "B.weight", DType.F32, new long[] {out, 2}));
        }
        SafetensorsWriter.writeFile(copy.resolve("adapter_model.safetensors"), specs,
                spec -> new float[(int) spec.numel()]);
        ObjectNode config = (ObjectNode) JSON.readTree(copy.resolve("adapter_config.json").toFile());
        targets.forEach(config.putArray("target_modules")::add);
        JSON.writeValue(copy.resolve("adapter_config.json").toFile(), config);
        return copy;
    }

    /**
     * Adapters no single model can hold are refused, naming both and what differs; before, their average was written
     * and loaded on neither. Different target modules on one model stay fine: the average is their union.
     */
    @Test
    void adaptersForDifferentModelsAreRefused() throws IOException {
        Path a0 = ADAPTERS.resolve("a0");
        Path moe = adapter("moe", List.of("q_proj", "w2"), "model.layers.0.self_attn.q_proj", 8, 8,
                "model.layers.0.block_sparse_moe.experts.0.w2", 8, 16, "model.layers.0.block_sparse_moe.experts.1.w2", 8,
                16);
        assertRefused(linear(a0, moe), "the adapters " + a0 + " and " + moe + " are for different models: a dense MLP "
                + "(model.layers.0.mlp.down_proj) in " + a0 + " but a mixture of experts "
                + "(model.layers.0.block_sparse_moe.experts.0.w2) in " + moe + "; their average would load on neither");
        Path moreExperts = adapter("more-experts", List.of("w2"), "model.layers.0.block_sparse_moe.experts.0.w2", 8,
                16, "model.layers.0.block_sparse_moe.experts.1.w2", 8, 16, "model.layers.0.block_sparse_moe.experts.2.w2",
                8, 16);
        assertRefused(linear(moe, moreExperts), "model.layers.0.block_sparse_moe.experts.*.w2 has experts [0, 1] in "
                + moe + " but [0, 1, 2] in " + moreExperts);
        Path wider = adapter("wider", List.of("v_proj"), "model.layers.0.self_attn.v_proj", 8, 16);
        assertRefused(linear(a0, wider), "hidden size 8 (model.layers.0.mlp.down_proj out) in " + a0 + " but 16 "
                + "(model.layers.0.self_attn.v_proj in) in " + wider);

        Path vOnly = adapter("v-only", List.of("v_proj"), "model.layers.0.self_attn.v_proj", 8, 8);
        ModelMerge.run(linear(a0, vOnly), false, Long.MAX_VALUE);
        try (SafetensorsReader merged = SafetensorsReader.open(dir.resolve("out/adapter_model.safetensors"))) {
            assertEquals(6, merged.names().size(), merged.names().toString());
        }
    }

    @Test
    void aNonEmptyOutIsReplacedOnlyWithForce() throws IOException {
        Path out = Files.createDirectories(dir.resolve("out"));
        Files.writeString(out.resolve("keep.txt"), "mine");
        MergeConfig config = linear(CHECKPOINTS.resolve("m0"), CHECKPOINTS.resolve("m1"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ModelMerge.run(config, false, Long.MAX_VALUE));
        assertTrue(e.getMessage().contains("exists and is not empty"), e.getMessage());
        assertTrue(Files.exists(out.resolve("keep.txt")));
        ModelMerge.run(config, true, Long.MAX_VALUE);
        assertFalse(Files.exists(out.resolve("keep.txt")));
        assertTrue(Files.isRegularFile(out.resolve("model.safetensors")));
        try (Stream<Path> left = Files.list(dir)) {
            assertEquals(List.of(out), left.toList(), "the replaced directory is gone, no staging left");
        }
    }

    @Test
    void aFailureWhileWritingLeavesNoOutput() throws IOException {
        Path out = dir.resolve("out");
        try (CheckpointMerge merge = CheckpointMerge.open(null, List.of(CHECKPOINTS.resolve("m0"),
                CHECKPOINTS.resolve("m1")), false, null, CHECKPOINTS.resolve("m0"), null)) {
            int[] seen = {0};
            assertThrows(IllegalStateException.class, () -> {
                try (StagedOutput staged = StagedOutput.create(out, false)) {
                    merge.write((name, base, models) -> {
                        if (++seen[0] == 3) {
                            throw new IllegalStateException("disk full");
                        }
                        return models.get(0);
                    }, staged.dir(), 100);
                    staged.commit();
                }
            });
        }
        try (Stream<Path> left = Files.list(dir)) {
            assertEquals(List.of(), left.toList(), "neither out nor out.tmp-* exists");
        }
    }
}
