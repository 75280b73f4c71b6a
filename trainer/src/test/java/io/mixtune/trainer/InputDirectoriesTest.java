package io.mixtune.trainer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The three things a model or adapter directory can lack, each in the words every entry point uses. */
class InputDirectoriesTest {

    @Test
    void namesWhatADirectoryLacks(@TempDir Path dir) throws IOException {
        Path file = Files.writeString(dir.resolve("config.json"), "{}");
        assertEquals("is a file, expected a Hugging Face checkpoint directory (config.json + safetensors)",
                InputDirectories.modelProblem(file));
        assertEquals("no such directory (expected a Hugging Face checkpoint)",
                InputDirectories.modelProblem(dir.resolve("absent")));
        Path empty = Files.createDirectories(dir.resolve("empty"));
        assertEquals("no Hugging Face checkpoint there (config.json missing)", InputDirectories.modelProblem(empty));
        assertNull(InputDirectories.modelProblem(dir));

        assertEquals("is a file, expected a PEFT adapter directory (adapter_config.json + adapter_model.safetensors)",
                InputDirectories.adapterProblem(file));
        assertEquals("no PEFT adapter there (adapter_config.json missing)", InputDirectories.adapterProblem(dir));
        Files.writeString(empty.resolve("adapter_config.json"), "{}");
        assertNull(InputDirectories.adapterProblem(empty));

        InvalidOptionException e = assertThrows(InvalidOptionException.class,
                () -> InputDirectories.requireAdapter("proxy-adapter", dir.resolve("absent")));
        assertEquals("proxy-adapter", e.option());
        assertEquals("--proxy-adapter " + dir.resolve("absent") + ": no such directory (expected a PEFT adapter)",
                e.getMessage());
    }
}
