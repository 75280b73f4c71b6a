package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What mergekit (arcee-ai/mergekit) does with a config, mixtune does too: the files it carries (merge.py,
 * _copy_tokenizer), tokenizers it does not compare, inputs of mixed dtypes cast on load (io/tasks.py), flags written as
 * numbers, linear's base_model among its models. Each input is a tiny checkpoint of one value per model.
 */
class MergekitParityTest {
    /** A BPE tokenizer.json: {@code <s>} added, a, b, ab, and the merge "a b". */
    private static final String TOKENIZER = """
            {"version": "1.0", "truncation": null, "added_tokens": [{"id": 0, "content": "<s>", "special": true}],
             "model": {"type": "BPE", "vocab": {"<s>": 0, "a": 1, "b": 2, "ab": 3}, "merges": ["a b"]}}
            """;

    @TempDir
    Path dir;

    /** A two-layer checkpoint whose every weight is {@code value}, named in its config, with {@link #TOKENIZER}. */
    private Path model(String name, DType dtype, float value) throws IOException {
        Path model = Files.createDirectories(dir.resolve(name));
        Files.writeString(model.resolve("config.json"), """
                {"_name_or_path": "%s", "model_type": "mistral", "architectures": ["MistralForCausalLM"],
                 "hidden_size": 2, "num_hidden_layers": 2, "vocab_size": 4}
                """.formatted(name));
        Files.writeString(model.resolve("tokenizer.json"), TOKENIZER);
        Files.writeString(model.resolve("tokenizer_config.json"), "{\"chat_template\": \"" + name + "\"}");
        List<String> names = List.of("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                "model.layers.1.self_attn.q_proj.weight", "model.norm.weight", "lm_head.weight");
        List<TensorSpec> specs = names.stream().map(n -> new TensorSpec(n, dtype, new long[] {2})).toList();
        SafetensorsWriter.writeCheckpoint(model, specs, Long.MAX_VALUE, new SafetensorsWriter.TensorSource() {
            @Override
            public float[] floats(TensorSpec spec) {
                return new float[] {value, value};
            }

            @Override
            public byte[] rawBytes(TensorSpec spec) {
                throw new UnsupportedOperationException();
            }
        });
        return model;
    }

    private Path merge(String yaml, String out) throws IOException {
        Path file = Files.writeString(dir.resolve(out + ".yml"), yaml);
        ModelMerge.run(MergeYaml.read(file, dir.resolve(out)), false, Long.MAX_VALUE);
        return dir.resolve(out);
    }

    private String refusal(String yaml, String out) throws IOException {
        return assertThrows(IllegalArgumentException.class, () -> merge(yaml, out)).getMessage();
    }

    private static void assertWeights(Path merged, DType dtype, float value) {
        try (SafetensorsReader reader = SafetensorsReader.open(merged)) {
            for (String name : reader.names()) {
                assertEquals(dtype, reader.info(name).dtype(), name);
                for (float v : reader.readFloats(name)) {
                    assertEquals(value, v, 1e-6, name);
                }
            }
        }
    }

    private static String linear(Path... models) {
        StringBuilder yaml = new StringBuilder("merge_method: linear\nmodels:\n");
        for (Path model : models) {
            yaml.append("  - model: ").append(model).append("\n    parameters: {weight: 1.0}\n");
        }
        return yaml.toString();
    }

    /** ties takes rescale as mergekit does (off by default); dare_* rescale by default; task_arithmetic thins nothing. */
    @Test
    void tiesTakesRescale() throws IOException {
        String ties = "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.5}\n";
        assertFalse(MergeYaml.read(Files.writeString(dir.resolve("t.yml"), ties), dir.resolve("o")).rescale());
        assertTrue(MergeYaml.read(Files.writeString(dir.resolve("tr.yml"), ties + "parameters: {rescale: true}\n"),
                dir.resolve("o")).rescale());
        assertTrue(MergeYaml.read(Files.writeString(dir.resolve("d.yml"), ties.replace("ties", "dare_ties")),
                dir.resolve("o")).rescale());
        Path arithmetic = Files.writeString(dir.resolve("ta.yml"), "merge_method: task_arithmetic\nbase_model: base\n"
                + "models:\n  - model: a\nparameters: {rescale: true}\n");
        String message = assertThrows(IllegalArgumentException.class, () -> MergeYaml.read(arithmetic, dir.resolve("o")))
                .getMessage();
        assertTrue(message.contains("task_arithmetic takes no rescale (only ties, dare_linear and dare_ties do)"), message);
    }
}
