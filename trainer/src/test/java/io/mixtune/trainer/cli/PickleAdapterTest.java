package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.trainer.cli.MixtuneCliTest.Result;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * An adapter saved by PEFT with safe_serialization=False holds adapter_model.bin, a pickle: every command that reads
 * an adapter refuses it as pickle (the checkpoints' refusal), never reports it missing and never unpickles it.
 */
class PickleAdapterTest {
    @TempDir
    Path dir;

    @Test
    void aPickleOnlyAdapterIsRefusedAsPickle() throws IOException {
        Path model = dir.resolve("model");
        Path adapter = dir.resolve("adapter");
        assertEquals(0, MixtuneCliTest.run("init-model", "--preset", "tiny-mistral", "--out", model.toString()).code());
        assertEquals(0, MixtuneCliTest.run("init-adapter", "--model", model.toString(), "--out", adapter.toString(),
                "--r", "2").code());
        Files.move(adapter.resolve("adapter_model.safetensors"), adapter.resolve("adapter_model.bin"));
        Path chats = Files.writeString(dir.resolve("chats.jsonl"), """
                {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
                """);
        String expected = adapter.resolve("adapter_model.bin") + ": refusing to load this file: PyTorch pickle "
                + "checkpoints (.bin/.pt/.pth/.ckpt) can run arbitrary code when loaded. Convert it to safetensors "
                + "first, e.g. in Python with PEFT: PeftModel.from_pretrained(base, src).save_pretrained(dst)";
        List<List<String>> commands = List.of(
                List.of("eval", "--model", model.toString(), "--adapter", adapter.toString(), "--data",
                        chats.toString()),
                List.of("generate", "--model", model.toString(), "--adapter", adapter.toString(), "--prompt-ids",
                        "1,2", "--max-new-tokens", "1"),
                List.of("merge-adapter", "--model", model.toString(), "--adapter", adapter.toString(), "--out",
                        dir.resolve("merged").toString()),
                List.of("merge", "--method", "linear", "--inputs", adapter + "," + adapter, "--out",
                        dir.resolve("averaged").toString()));
        for (List<String> command : commands) {
            Result result = MixtuneCliTest.run(command.toArray(String[]::new));
            assertTrue(result.code() != 0, command + " succeeded");
            assertTrue(result.err().contains(expected), command + ": " + result.err());
        }
        assertFalse(Files.exists(dir.resolve("merged/config.json")));
        assertFalse(Files.exists(dir.resolve("averaged/adapter_config.json")));
    }
}
