package io.mixtune.lora.adapter;

import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.net.URISyntaxException;
import java.nio.file.Path;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Adapters that PEFT made (interop/make_goldens.py), per-expert and in its transformers-5 fused layout, load into mixtune and give PEFT's logits. */
class PeftGoldenTest {

    static Path golden(String name) {
        try {
            return Path.of(PeftGoldenTest.class.getResource("/golden/peft/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"base", "peft-attention", "peft-experts", "peft-fused"})
    void logitsEqualPeft(String name) throws Exception {
        JsonNode prompt = new ObjectMapper().readTree(golden("prompt.json").toFile()).get("prompt_ids");
        long[] ids = new long[prompt.size()];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = prompt.get(i).longValue();
        }
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(golden("base"), manager);
                SafetensorsReader expected = SafetensorsReader.open(golden("expected.safetensors"))) {
            if (!name.equals("base")) {
                PeftAdapter.load(new LoraModel(model), golden(name), "default");
            }
            float[] logits = model.forward(manager.create(ids).reshape(1, ids.length),
                    manager.arange(0, ids.length, 1, DataType.INT64).reshape(1, ids.length), null).toFloatArray();
            LoraAdapterTest.assertArrayClose(expected.readFloats(name + ".logits"), logits, 1e-4, name);
            if (!name.equals("base")) {
                double change = LoraAdapterTest.maxDiff(expected.readFloats("base.logits"), logits);
                org.junit.jupiter.api.Assertions.assertTrue(change > 1e-2, name + " barely changes the base: " + change);
            }
        }
    }
}
