package io.mixtune.lora.adapter;

import static io.mixtune.lora.adapter.LoraAdapterTest.assertArrayClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.norm.Dropout;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.DenseLinear;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** DoRA's parts that the PEFT golden (DoraGoldenTest) does not reach: dropout, init, refusals, the file round trip. */
class DoraTest {

    /**
     * With dropout active PEFT 0.21 (DoraLinearVariant.forward) recomputes the base output on the dropped input:
     * y = x W^T + (s - 1) x' W^T + s (B A x') scale, x' = dropout(x); in evaluation x' = x.
     */
    @Test
    void dropoutRecomputesTheBaseOutputOnTheDroppedInput() {
        try (NDManager manager = NDManager.newBaseManager()) {
            int in = 6;
            int out = 5;
            NDArray w = manager.randomNormal(new Shape(out, in));
            NDArray a = manager.randomNormal(new Shape(2, in));
            NDArray b = manager.randomNormal(new Shape(out, 2));
            NDArray m = manager.randomUniform(0.5f, 2f, new Shape(out));
            NDArray x = manager.randomNormal(new Shape(3, in));
            LoraLinear lora = new LoraLinear(new DenseLinear(w));
            lora.add("default", new LoraLinear.Adapter(a, b, 1.5, 0.5, m));
            NDArray s = m.div(w.add(b.matMul(a).mul(1.5f)).norm(new int[] {1}));

            lora.setTraining(true);
            Engine.getInstance().setRandomSeed(17);
            float[] trained = lora.forward(x).toFloatArray();
            Engine.getInstance().setRandomSeed(17);
            NDArray dropped = Dropout.dropout(x, 0.5f, true).singletonOrThrow();
            NDArray expected = x.matMul(w.transpose()).add(s.sub(1).mul(dropped.matMul(w.transpose())))
                    .add(s.mul(dropped.matMul(a.transpose()).matMul(b.transpose())).mul(1.5f));
            assertArrayClose(expected.toFloatArray(), trained, 1e-5, "training");
            NDArray withoutRecompute = x.matMul(w.transpose()).mul(s)
                    .add(s.mul(dropped.matMul(a.transpose()).matMul(b.transpose())).mul(1.5f));
            assertTrue(LoraAdapterTest.maxDiff(withoutRecompute.toFloatArray(), trained) > 1e-2, "mask not applied");

            lora.setTraining(false);
            NDArray evaluated = x.matMul(w.transpose()).mul(s)
                    .add(s.mul(x.matMul(a.transpose()).matMul(b.transpose())).mul(1.5f));
            assertArrayClose(evaluated.toFloatArray(), lora.forward(x).toFloatArray(), 1e-5, "evaluation");
        }
    }

    /** PEFT's init: m = ||W + scale B A|| per row, so a fresh adapter (B = 0) leaves the model as it is. */
    @Test
    void aFreshDoraAdapterChangesNothingAndSavesPeftsKeys(@TempDir Path dir) throws Exception {
        RandomCheckpoint.write(LoraAdapterTest.mistral(), dir.resolve("base"), 1, DType.F32, Long.MAX_VALUE);
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(dir.resolve("base"), manager)) {
            NDArray ids = manager.create(new long[] {1, 5, 9, 3}).reshape(1, 4);
            NDArray positions = manager.arange(0L, 4L).reshape(1, 4);
            float[] base = model.forward(ids, positions, null).toFloatArray();
            LoraModel lora = new LoraModel(model);
            LoraConfig config = LoraConfig.of(4, 8, List.of("q_proj", "down_proj", "lm_head")).withDora(true);
            lora.addAdapter("default", config, LoraModel.Init.PEFT_DEFAULT, 3);
            assertArrayClose(base, model.forward(ids, positions, null).toFloatArray(), 1e-5, "fresh DoRA");
            NDArray q = ((DenseLinear) lora.layers().get("model.layers.0.self_attn.q_proj").base()).weight();
            assertArrayClose(q.norm(new int[] {1}).toFloatArray(),
                    lora.layers().get("model.layers.0.self_attn.q_proj").adapter("default").magnitude().toFloatArray(),
                    1e-6, "magnitude");
            assertEquals(3 * 5, lora.parameters("default").size());
            assertEquals("model.layers.0.self_attn.q_proj.lora_magnitude_vector",
                    lora.parameterNames("default").get(2));

            PeftAdapter.save(lora, "default", dir.resolve("adapter"), "base");
            assertTrue(Files.readString(dir.resolve("adapter/adapter_config.json")).contains("\"use_dora\" : true"));
            try (SafetensorsReader saved = SafetensorsReader.open(dir.resolve("adapter/adapter_model.safetensors"))) {
                assertArrayClose(saved.readFloats("base_model.model.lm_head.lora_magnitude_vector"),
                        lora.layers().get("lm_head").adapter("default").magnitude().toFloatArray(), 0, "saved");
            }
            LoraModel again = new LoraModel(model);
            PeftAdapter.load(again, dir.resolve("adapter"), "loaded");
            assertTrue(again.config("loaded").useDora());
            assertEquals(lora.parameterNames("default"), again.parameterNames("loaded"));

            // The config and the file must agree: a magnitude under use_dora false, or none under true, is refused.
            Path configFile = dir.resolve("adapter/adapter_config.json");
            Files.writeString(configFile, Files.readString(configFile).replace("\"use_dora\" : true",
                    "\"use_dora\" : false"));
            String extra = assertThrows(IllegalArgumentException.class,
                    () -> PeftAdapter.load(new LoraModel(model), dir.resolve("adapter"), "plain")).getMessage();
            assertTrue(extra.contains("base_model.model.lm_head.lora_magnitude_vector is a DoRA magnitude, but "
                    + "adapter_config.json has use_dora false"), extra);
            lora.removeAdapter("default");
            lora.addAdapter("lora", LoraConfig.of(4, 8, List.of("q_proj")), LoraModel.Init.PEFT_DEFAULT, 3);
            PeftAdapter.save(lora, "lora", dir.resolve("plain"), "base");
            Path plainConfig = dir.resolve("plain/adapter_config.json");
            Files.writeString(plainConfig, Files.readString(plainConfig).replace("\"use_dora\" : false",
                    "\"use_dora\" : true"));
            String missing = assertThrows(IllegalArgumentException.class,
                    () -> PeftAdapter.load(new LoraModel(model), dir.resolve("plain"), "dora")).getMessage();
            assertTrue(missing.contains("model.layers.0.self_attn.q_proj has no base_model.model.model.layers.0"
                    + ".self_attn.q_proj.lora_magnitude_vector though use_dora is true"), missing);
        }
    }

    /** PEFT 0.21 refuses DoRA on the Mixtral experts and router (fused ParamWrapper); so does mixtune, naming them. */
    @Test
    void doraOnMixtralExpertsOrRouterIsRefusedByName(@TempDir Path dir) {
        RandomCheckpoint.write(LoraAdapterTest.mixtral(), dir, 1, DType.F32, Long.MAX_VALUE);
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(dir, manager)) {
            LoraModel lora = new LoraModel(model);
            String experts = assertThrows(IllegalArgumentException.class, () -> lora.addAdapter("default",
                    LoraConfig.of(4, 8, List.of("all-linear")).withDora(true), LoraModel.Init.PEFT_DEFAULT, 0))
                    .getMessage();
            assertTrue(experts.contains("DoRA (use_dora) cannot go on model.layers.0.block_sparse_moe.experts.0.w1: "
                    + "PEFT 0.21 holds the Mixtral experts as fused parameters"), experts);
            String router = assertThrows(IllegalArgumentException.class, () -> lora.addAdapter("router",
                    LoraConfig.of(4, 8, List.of("gate")).withDora(true), LoraModel.Init.PEFT_DEFAULT, 0)).getMessage();
            assertTrue(router.contains("model.layers.0.block_sparse_moe.gate: PEFT 0.21 holds the Mixtral router"),
                    router);
            lora.addAdapter("attention", LoraConfig.of(4, 8, List.of("q_proj", "o_proj")).withDora(true),
                    LoraModel.Init.PEFT_DEFAULT, 0);
        }
    }
}
