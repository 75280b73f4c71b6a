package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * WARM on reward adapters (LoRA + a score head in PEFT's modules_to_save): the LoRA deltas averaged exactly (ranks
 * concatenated), the head linearly, the result again a reward adapter; members of another kind or head refused.
 */
class WarmRewardAdapterTest {
    private static final String HEAD = PeftAdapter.moduleToSaveKey(PeftAdapter.SCORE_HEAD);
    private static final LoraConfig LORA = new LoraConfig(4, 8, 0, List.of("q_proj", "v_proj"), false, Map.of(),
            Map.of());

    /** A reward adapter with random A, B (seeded) and a head [1, headWidth]; headWidth 0: a causal LM's adapter. */
    private static Path member(Path dir, Path base, String name, int seed, int headWidth) {
        return member(dir, base, name, seed, headWidth, LORA);
    }

    private static Path member(Path dir, Path base, String name, int seed, int headWidth, LoraConfig config) {
        Path adapter = dir.resolve(name);
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(base, manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", config, LoraModel.Init.RANDOM, seed);
            if (headWidth > 0) {
                float[] head = new float[headWidth];
                Random random = new Random(seed);
                for (int i = 0; i < head.length; i++) {
                    head[i] = (float) random.nextGaussian();
                }
                lora.addModuleToSave("default", PeftAdapter.SCORE_HEAD, manager.create(head, new Shape(1, headWidth)));
            }
            PeftAdapter.save(lora, "default", adapter, base.toString());
        }
        return adapter;
    }

    @Test
    void warmAveragesLoraDeltasExactlyAndTheHeadLinearly(@TempDir Path dir) throws Exception {
        Path base = dir.resolve("base");
        RandomCheckpoint.write(AdapterAverageParityTest.config(false), base, 3, DType.F32, Long.MAX_VALUE, 0.3);
        List<Path> members = new ArrayList<>();
        for (int i = 0; i < 3; i++) { // LoRA dropout differs, as WARM varies it: the config is otherwise one
            members.add(member(dir, base, "rm-" + i, 20 + i, 32, new LoraConfig(LORA.r(), LORA.alpha(), 0.05 * i,
                    LORA.targetModules(), false, Map.of(), Map.of())));
        }
        Path out = dir.resolve("warm");
        MergeReport report = ModelMerge.run(new MergeConfig(MergeMethod.WARM, null, MergeConfig.models(members, null), null, null, null, null, null, out), false, Long.MAX_VALUE);
        assertTrue(report.adapters());
        JsonNode config = new ObjectMapper().readTree(out.resolve(PeftAdapter.CONFIG_FILE).toFile());
        assertEquals("SEQ_CLS", config.get("task_type").asText());
        assertEquals("[\"score\"]", config.get("modules_to_save").toString());

        String module = "model.layers.1.self_attn.q_proj";
        float[] expectedHead = new float[32];
        double[] expectedDelta = null;
        for (Path member : members) {
            try (SafetensorsReader reader = SafetensorsReader.open(member.resolve(PeftAdapter.WEIGHTS_FILE))) {
                float[] head = reader.readFloats(HEAD);
                for (int j = 0; j < head.length; j++) {
                    expectedHead[j] += head[j] / 3;
                }
                double[] delta = delta(reader, module, LORA.scaleOf(module));
                if (expectedDelta == null) {
                    expectedDelta = new double[delta.length];
                }
                for (int j = 0; j < delta.length; j++) {
                    expectedDelta[j] += delta[j] / 3;
                }
            }
        }
        try (SafetensorsReader averaged = SafetensorsReader.open(out.resolve(PeftAdapter.WEIGHTS_FILE))) {
            assertArrayEquals(expectedHead, averaged.readFloats(HEAD), 1e-6f, "the head, averaged linearly");
            double[] delta = delta(averaged, module, 1.0); // the average is written at scale 1 (alpha = r = 12)
            assertEquals(12, averaged.info(PeftAdapter.aKey(module)).shape()[0], "ranks concatenated: 3 x 4");
            for (int j = 0; j < delta.length; j++) {
                assertEquals(expectedDelta[j], delta[j], 1e-5, "B A of the average, element " + j);
            }
        }
    }

    @Test
    void warmRefusesMembersOfAnotherKindOrHead(@TempDir Path dir) {
        Path base = dir.resolve("base");
        RandomCheckpoint.write(AdapterAverageParityTest.config(false), base, 3, DType.F32, Long.MAX_VALUE, 0.3);
        Path reward = member(dir, base, "rm", 1, 32);
        Path causal = member(dir, base, "sft", 2, 0);
        Path otherHead = member(dir, base, "rm-wide", 3, 16);
        IllegalArgumentException kinds = assertThrows(IllegalArgumentException.class, () -> ModelMerge.run(
                new MergeConfig(MergeMethod.WARM, null, MergeConfig.models(List.of(reward, causal), null),
                        null, null, null, null, null, dir.resolve("out")), false, Long.MAX_VALUE));
        assertEquals(reward + " is a reward model (a score head) but " + causal + " is a causal LM's adapter: "
                + "average reward models with reward models", kinds.getMessage());
        IllegalArgumentException heads = assertThrows(IllegalArgumentException.class, () -> ModelMerge.run(
                new MergeConfig(MergeMethod.WARM, null, MergeConfig.models(List.of(reward, otherHead), null), null, null, null, null, null, dir.resolve("out")), false, Long.MAX_VALUE));
        assertTrue(heads.getMessage().contains("score head [1, 16] but [1, 32]"), heads.getMessage());
    }

    /** scale x B A of one module, [out x in] row-major. */
    private static double[] delta(SafetensorsReader reader, String module, double scale) {
        long[] aShape = reader.info(PeftAdapter.aKey(module)).shape();
        long[] bShape = reader.info(PeftAdapter.bKey(module)).shape();
        float[] a = reader.readFloats(PeftAdapter.aKey(module));
        float[] b = reader.readFloats(PeftAdapter.bKey(module));
        int rank = (int) aShape[0];
        int in = (int) aShape[1];
        int out = (int) bShape[0];
        double[] delta = new double[out * in];
        for (int o = 0; o < out; o++) {
            for (int i = 0; i < in; i++) {
                double sum = 0;
                for (int k = 0; k < rank; k++) {
                    sum += (double) b[o * rank + k] * a[k * in + i];
                }
                delta[o * in + i] = scale * sum;
            }
        }
        return delta;
    }
}
