package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What `mixtune merge-moe` writes is a Mixtral the rest of mixtune takes: built from bfloat16 Mistral checkpoints
 * (DJL has no bfloat16: converted on reading), it trains a LoRA for a couple of steps and exports to GGUF.
 */
class MergeMoeOutputUseTest {
    @Test
    void theMixtureOfBf16FineTunesTrainsAndExports(@TempDir Path dir) throws IOException {
        Path base = dir.resolve("base");
        Path expert = dir.resolve("expert");
        for (Object[] model : new Object[][] {{base, "0"}, {expert, "1"}}) {
            MixtuneCliTest.Result made = MixtuneCliTest.run("init-model", "--preset", "tiny-mistral", "--out",
                    model[0].toString(), "--seed", (String) model[1], "--dtype", "bf16");
            assertEquals(0, made.code(), made.err());
        }
        Path config = Files.writeString(dir.resolve("moe.yml"), "base_model: " + base + "\nexperts:\n"
                + "  - source_model: " + base + "\n    positive_prompts: [\"Tell me a story\"]\n"
                + "  - source_model: " + expert + "\n    positive_prompts: [\"Write a python function\"]\n");
        Path mixture = dir.resolve("mixture");
        MixtuneCliTest.Result merged = MixtuneCliTest.run("merge-moe", config.toString(), mixture.toString(),
                "--device", "cpu");
        assertEquals(0, merged.code(), merged.err());
        JsonNode json = new ObjectMapper().readTree(mixture.resolve("config.json").toFile());
        assertEquals("bfloat16", json.path("torch_dtype").asText(json.path("dtype").asText()), json.toString());

        Path chats = Files.writeString(dir.resolve("chats.jsonl"), """
                {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"}]}
                {"messages": [{"role": "user", "content": "Sum?"}, {"role": "assistant", "content": "Two plus two."}]}
                """);
        Path recipe = Files.writeString(dir.resolve("recipe.yaml"), "model:\n  path: " + mixture
                + "\n  quantize: none\nlora:\n  r: 4\n  targets: [all-linear]\ndata:\n  files: [" + chats
                + "]\n  max_seq_len: 64\ntrain:\n  max_steps: 2\n  lr: 1.0e-3\noutput_dir: " + dir.resolve("run")
                + "\n");
        MixtuneCliTest.Result trained = MixtuneCliTest.run("train", "--recipe", recipe.toString());
        assertEquals(0, trained.code(), trained.err());
        List<Double> losses = TrainCommandTest.losses(dir.resolve("run/metrics.jsonl"));
        assertEquals(2, losses.size());
        assertTrue(losses.stream().allMatch(l -> Double.isFinite(l) && l > 0), losses.toString());

        Path gguf = dir.resolve("mixture.gguf");
        MixtuneCliTest.Result exported = MixtuneCliTest.run("export-gguf", "--model", mixture.toString(),
                "--adapter", dir.resolve("run/adapter").toString(), "--out", gguf.toString(), "--type", "f16");
        assertEquals(0, exported.code(), exported.err());
        assertTrue(Files.size(gguf) > 100_000);
    }
}
