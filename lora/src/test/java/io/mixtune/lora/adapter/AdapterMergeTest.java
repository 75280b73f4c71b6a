package io.mixtune.lora.adapter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A merged checkpoint computes what base + adapter computes. */
class AdapterMergeTest {

    @Test
    void mergedLogitsEqualBasePlusAdapterForBothMixtralLayouts(@TempDir Path dir) throws Exception {
        Path hub = dir.resolve("hub");
        RandomCheckpoint.write(LoraAdapterTest.mixtral(), hub, 5, DType.F32, Long.MAX_VALUE, 0.3);
        Path fused = dir.resolve("fused");
        writeFusedCopy(hub, fused);
        Path adapter = dir.resolve("adapter");
        float[] adapted;
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(hub, manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", new LoraConfig(4, 8, 0, List.of("q_proj", "o_proj", "w1", "w2", "w3", "gate"),
                    false, Map.of(), Map.of()), LoraModel.Init.RANDOM, 9);
            PeftAdapter.save(lora, "default", adapter, "hub");
            adapted = logits(model, manager);
        }
        for (Path base : List.of(hub, fused)) {
            Path merged = dir.resolve("merged-" + base.getFileName());
            AdapterMerge.merge(base, adapter, merged, null, 20_000);
            try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(merged, manager)) {
                LoraAdapterTest.assertArrayClose(adapted, logits(model, manager), 2e-5, "merged " + base.getFileName());
            }
        }
        IllegalArgumentException sameDir = assertThrows(IllegalArgumentException.class,
                () -> AdapterMerge.merge(hub, adapter, hub, null, 20_000));
        assertTrue(sameDir.getMessage().contains("out " + hub + " is the input " + hub), sameDir.getMessage());
    }

    @Test
    void anAdapterForAnotherModelIsRefusedBeforeAnythingIsWritten(@TempDir Path dir) {
        Path mistral = dir.resolve("mistral");
        Path mixtral = dir.resolve("mixtral");
        RandomCheckpoint.write(LoraAdapterTest.mistral(), mistral, 1, DType.F32, Long.MAX_VALUE);
        RandomCheckpoint.write(LoraAdapterTest.mixtral(), mixtral, 1, DType.F32, Long.MAX_VALUE);
        Path adapter = dir.resolve("adapter");
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(mistral, manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", LoraConfig.of(4, 8, List.of("all-linear")), LoraModel.Init.RANDOM, 1);
            PeftAdapter.save(lora, "default", adapter, "mistral");
        }
        Path out = dir.resolve("out");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> AdapterMerge.merge(mixtral, adapter, out, null, Long.MAX_VALUE));
        assertTrue(e.getMessage().contains("model.layers.0.mlp.gate_proj: the base checkpoint has no weight for it"),
                e.getMessage());
        assertTrue(!Files.exists(out.resolve("model.safetensors")));
    }

    /** A random tiny Mistral at {@code base} and a random q_proj + v_proj adapter of it at {@code adapter}. */
    private static void writeBaseAndQvAdapter(Path base, Path adapter) throws Exception {
        RandomCheckpoint.write(LoraAdapterTest.mistral(), base, 3, DType.F32, Long.MAX_VALUE);
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(base, manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", LoraConfig.of(4, 8, List.of("q_proj", "v_proj")), LoraModel.Init.RANDOM, 5);
            PeftAdapter.save(lora, "default", adapter, "base");
        }
    }

    /**
     * A file with q_proj and v_proj tensors whose config selects only q_proj: PEFT wraps only q_proj and drops the
     * v_proj tensors unused, with no warning; mixtune refuses it, loaded or merged, naming the tensors it would drop.
     */
    @Test
    void weightsTheConfigDoesNotSelectAreRefusedWhenLoadedAndMerged(@TempDir Path dir) throws Exception {
        Path base = dir.resolve("base");
        Path full = dir.resolve("full");
        writeBaseAndQvAdapter(base, full);
        // The same file, its config narrowed to q_proj.
        Path narrowed = dir.resolve("narrowed");
        Files.createDirectories(narrowed);
        Files.copy(full.resolve(PeftAdapter.WEIGHTS_FILE), narrowed.resolve(PeftAdapter.WEIGHTS_FILE));
        ObjectMapper json = new ObjectMapper();
        ObjectNode config = (ObjectNode) json.readTree(full.resolve(PeftAdapter.CONFIG_FILE).toFile());
        config.putArray("target_modules").add("q_proj");
        json.writeValue(narrowed.resolve(PeftAdapter.CONFIG_FILE).toFile(), config);

        IllegalArgumentException loaded = assertThrows(IllegalArgumentException.class, () -> adaptedLogits(base, narrowed));
        assertTrue(loaded.getMessage().contains("which PEFT would drop unused: model.layers.0.self_attn.v_proj"),
                loaded.getMessage());
        IllegalArgumentException merged = assertThrows(IllegalArgumentException.class,
                () -> AdapterMerge.merge(base, narrowed, dir.resolve("merged"), null, Long.MAX_VALUE));
        assertTrue(merged.getMessage().contains("model.layers.0.self_attn.v_proj's weights, which the adapter's config "
                + "does not select"), merged.getMessage());
        assertTrue(!Files.exists(dir.resolve("merged")));
    }

    /**
     * Keys that fit no module and modules without keys. PEFT 0.21 loads such a file with load_state_dict(strict=False):
     * the extra tensors are dropped without a word (load_adapter returns them as unexpected_keys), a missing module
     * only warns ("Found missing adapter keys") and stays at its init. mixtune refuses both, loaded or merged, naming
     * how many and the first ones, as it refuses tensors the config does not select. merge-adapter merged such a file
     * before, the stray tensors and the missing module left out silently.
     */
    @Test
    void keysThatFitNoModuleAndModulesWithoutKeysAreRefusedWhenLoadedAndMerged(@TempDir Path dir) throws Exception {
        Path base = dir.resolve("base");
        Path full = dir.resolve("full");
        writeBaseAndQvAdapter(base, full);
        String q0 = "base_model.model.model.layers.0.self_attn.q_proj";
        String v1 = "base_model.model.model.layers.1.self_attn.v_proj";
        String farLayer = "base_model.model.model.layers.9.self_attn.q_proj";
        Map<String, String> cases = new java.util.LinkedHashMap<>();
        cases.put("a layer the model lacks", "model.layers.9.self_attn.q_proj");
        cases.put("a tensor that is no LoRA weight", "lm_head.bias");
        cases.put("a targeted module without weights", "model.layers.1.self_attn.v_proj");
        for (Map.Entry<String, String> c : cases.entrySet()) {
            Path adapter = dir.resolve(c.getKey().replace(' ', '-'));
            Files.createDirectories(adapter);
            Files.copy(full.resolve(PeftAdapter.CONFIG_FILE), adapter.resolve(PeftAdapter.CONFIG_FILE));
            List<TensorSpec> specs = new ArrayList<>();
            Map<String, float[]> values = new HashMap<>();
            try (SafetensorsReader reader = SafetensorsReader.open(full.resolve(PeftAdapter.WEIGHTS_FILE))) {
                for (String name : reader.names()) {
                    if (c.getKey().equals("a targeted module without weights") && name.startsWith(v1 + ".")) {
                        continue;
                    }
                    specs.add(new TensorSpec(name, DType.F32, reader.info(name).shape()));
                    values.put(name, reader.readFloats(name));
                    if (c.getKey().equals("a layer the model lacks") && name.startsWith(q0 + ".")) {
                        String extra = name.replace(q0, farLayer);
                        specs.add(new TensorSpec(extra, DType.F32, reader.info(name).shape()));
                        values.put(extra, reader.readFloats(name));
                    }
                }
            }
            if (c.getKey().equals("a tensor that is no LoRA weight")) {
                specs.add(new TensorSpec("lm_head.bias", DType.F32, new long[] {3}));
                values.put("lm_head.bias", new float[3]);
            }
            SafetensorsWriter.writeFile(adapter.resolve(PeftAdapter.WEIGHTS_FILE), specs,
                    spec -> values.get(spec.name()));

            IllegalArgumentException loaded = assertThrows(IllegalArgumentException.class,
                    () -> adaptedLogits(base, adapter), c.getKey());
            assertTrue(loaded.getMessage().contains(c.getValue()), c.getKey() + ": " + loaded.getMessage());
            Path out = dir.resolve("merged");
            IllegalArgumentException merged = assertThrows(IllegalArgumentException.class,
                    () -> AdapterMerge.merge(base, adapter, out, null, Long.MAX_VALUE), c.getKey());
            assertTrue(merged.getMessage().contains(c.getValue()), c.getKey() + ": " + merged.getMessage());
            assertTrue(!Files.exists(out), "nothing written");
        }
    }

    private static float[] adaptedLogits(Path base, Path adapter) {
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(base, manager)) {
            PeftAdapter.load(new LoraModel(model), adapter, "default");
            return logits(model, manager);
        }
    }

    private static float[] logits(CausalLm model, NDManager manager) {
        return model.forward(manager.create(new long[][] {{1, 17, 3, 44, 29, 60, 8}}),
                manager.arange(0, 7, 1, DataType.INT64).reshape(1, 7), null).toFloatArray();
    }

    /**
     * transformers 5 saves a chat template only as chat_template.jinja: the merged model carries it with the rest of
     * mergekit's list (added_tokens.json, merges.txt, chat_template.json), unless the adapter's tokenizer_config.json
     * brings the template it was trained with, which the base's .jinja would override.
     */
    @Test
    void theChatTemplateFilesTravelWithTheirTokenizerConfig(@TempDir Path dir) throws Exception {
        Path base = dir.resolve("base");
        RandomCheckpoint.write(LoraAdapterTest.mistral(), base, 3, DType.F32, Long.MAX_VALUE);
        Map<String, String> baseFiles = Map.of("tokenizer.json", "base tokenizer", "tokenizer_config.json", "{}",
                "chat_template.jinja", "{{ base }}", "chat_template.json", "{\"chat_template\": \"{{ base }}\"}",
                "added_tokens.json", "{}", "merges.txt", "a b");
        for (Map.Entry<String, String> file : baseFiles.entrySet()) {
            Files.writeString(base.resolve(file.getKey()), file.getValue());
        }
        Path adapter = dir.resolve("adapter");
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(base, manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", LoraConfig.of(4, 8, List.of("q_proj")), LoraModel.Init.RANDOM, 5);
            PeftAdapter.save(lora, "default", adapter, "base");
        }
        Path plain = dir.resolve("merged-plain");
        AdapterMerge.merge(base, adapter, plain, null, Long.MAX_VALUE);
        for (Map.Entry<String, String> file : baseFiles.entrySet()) {
            assertEquals(file.getValue(), Files.readString(plain.resolve(file.getKey())), file.getKey());
        }
        Files.writeString(adapter.resolve("tokenizer_config.json"), "{\"chat_template\": \"{{ trained }}\"}");
        Path merged = dir.resolve("merged");
        AdapterMerge.merge(base, adapter, merged, null, Long.MAX_VALUE);
        assertEquals("{\"chat_template\": \"{{ trained }}\"}", Files.readString(merged.resolve("tokenizer_config.json")));
        assertTrue(Files.notExists(merged.resolve("chat_template.jinja")) && Files.notExists(merged.resolve(
                "chat_template.json")), "the base's template files would override the adapter's template");
        assertEquals("a b", Files.readString(merged.resolve("merges.txt")));
    }

    /** The tokenizer files an adapter carries (the chat template it was trained with) win over the base's. */
    @Test
    void theAdaptersTokenizerFilesGoIntoTheMergedModel(@TempDir Path dir) throws Exception {
        Path base = dir.resolve("base");
        RandomCheckpoint.write(LoraAdapterTest.mistral(), base, 3, DType.F32, Long.MAX_VALUE);
        Files.writeString(base.resolve("tokenizer.json"), "base tokenizer");
        Files.writeString(base.resolve("tokenizer_config.json"), "{\"bos_token\": \"<s>\"}");
        Files.writeString(base.resolve("special_tokens_map.json"), "base map");
        Path adapter = dir.resolve("adapter");
        try (NDManager manager = NDManager.newBaseManager(); CausalLm model = MistralCheckpoint.load(base, manager)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter("default", LoraConfig.of(4, 8, List.of("q_proj")), LoraModel.Init.RANDOM, 5);
            PeftAdapter.save(lora, "default", adapter, "base");
        }
        Path plain = dir.resolve("merged-plain");
        AdapterMerge.merge(base, adapter, plain, null, Long.MAX_VALUE);
        assertEquals("{\"bos_token\": \"<s>\"}", Files.readString(plain.resolve("tokenizer_config.json")));
        Files.writeString(adapter.resolve("tokenizer.json"), "adapter tokenizer");
        Files.writeString(adapter.resolve("tokenizer_config.json"), "{\"chat_template\": \"{{ x }}\"}");
        Path merged = dir.resolve("merged");
        AdapterMerge.merge(base, adapter, merged, null, Long.MAX_VALUE);
        assertEquals("adapter tokenizer", Files.readString(merged.resolve("tokenizer.json")));
        assertEquals("{\"chat_template\": \"{{ x }}\"}", Files.readString(merged.resolve("tokenizer_config.json")));
        assertEquals("base map", Files.readString(merged.resolve("special_tokens_map.json")));
    }

    /** The same weights in transformers 5's fused expert layout. */
    private static void writeFusedCopy(Path hub, Path fused) throws Exception {
        Files.createDirectories(fused);
        Files.copy(hub.resolve("config.json"), fused.resolve("config.json"));
        List<TensorSpec> specs = new ArrayList<>();
        Map<String, float[]> data = new HashMap<>();
        try (SafetensorsReader reader = SafetensorsReader.open(hub)) {
            int experts = 3;
            for (String name : reader.names()) {
                if (name.contains(".block_sparse_moe.experts.")) {
                    continue;
                }
                String target = name.replace(".block_sparse_moe.gate.weight", ".mlp.gate.weight");
                specs.add(new TensorSpec(target, DType.F32, reader.info(name).shape()));
                data.put(target, reader.readFloats(name));
            }
            for (int layer = 0; layer < 2; layer++) {
                String p = "model.layers." + layer + ".block_sparse_moe.experts.";
                float[] gateUp = new float[experts * 2 * 48 * 32];
                float[] down = new float[experts * 32 * 48];
                for (int j = 0; j < experts; j++) {
                    System.arraycopy(reader.readFloats(p + j + ".w1.weight"), 0, gateUp, j * 2 * 48 * 32, 48 * 32);
                    System.arraycopy(reader.readFloats(p + j + ".w3.weight"), 0, gateUp, (j * 2 + 1) * 48 * 32, 48 * 32);
                    System.arraycopy(reader.readFloats(p + j + ".w2.weight"), 0, down, j * 32 * 48, 32 * 48);
                }
                String f = "model.layers." + layer + ".mlp.experts.";
                specs.add(new TensorSpec(f + "gate_up_proj", DType.F32, new long[] {experts, 96, 32}));
                specs.add(new TensorSpec(f + "down_proj", DType.F32, new long[] {experts, 32, 48}));
                data.put(f + "gate_up_proj", gateUp);
                data.put(f + "down_proj", down);
            }
        }
        SafetensorsWriter.writeCheckpoint(fused, specs, Long.MAX_VALUE, spec -> data.get(spec.name()));
    }
}
