package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** `mixtune merge-moe CONFIG.yml OUT_DIR`: mergekit-moe's command shape, its options taken or refused by name. */
class MergeMoeCommandTest {
    private static final Path GOLDEN = Path.of("../merging/src/test/resources/moe").toAbsolutePath()
            .normalize();

    private static Path config(Path dir) throws IOException {
        return Files.writeString(dir.resolve("moe.yml"), "base_model: " + GOLDEN.resolve("base")
                + "\ngate_mode: cheap_embed\nexperts:\n"
                + "  - source_model: " + GOLDEN.resolve("expert1") + "\n    positive_prompts: [\"doctor heals\"]\n"
                + "  - source_model: " + GOLDEN.resolve("expert2") + "\n    positive_prompts: [\"write python\"]\n");
    }

    @Test
    void buildsTheMixtureAndRefusesToOverwriteIt(@TempDir Path dir) throws IOException {
        Path out = dir.resolve("out");
        MixtuneCliTest.Result result = MixtuneCliTest.run("merge-moe", config(dir).toString(), out.toString(),
                "--device", "cpu");
        assertEquals(0, result.code(), result.err());
        assertTrue(result.out().startsWith("merge-moe: 2 experts (2 per token) x 2 layers, gate_mode cheap_embed"),
                result.out());
        assertTrue(Files.isRegularFile(out.resolve("model.safetensors")));
        MixtuneCliTest.Result again = MixtuneCliTest.run("merge-moe", config(dir).toString(), out.toString());
        assertEquals(2, again.code());
        assertTrue(again.err().contains("exists and is not empty"), again.err());
        assertEquals(0, MixtuneCliTest.run("merge-moe", config(dir).toString(), out.toString(), "--force").code());
    }

    @Test
    void mergekitOptionsMixtuneDoesNotTakeAreRefusedByName(@TempDir Path dir) throws IOException {
        MixtuneCliTest.Result result = MixtuneCliTest.run("merge-moe", config(dir).toString(),
                dir.resolve("out").toString(), "--load-in-8bit");
        assertEquals(2, result.code());
        assertTrue(result.err().contains("--load-in-8bit is mergekit-moe's and not taken"), result.err());
        assertFalse(Files.exists(dir.resolve("out")));
        result = MixtuneCliTest.run("merge-moe", config(dir).toString(), dir.resolve("out").toString(),
                "--random-seed", "x");
        assertEquals(2, result.code());
        assertTrue(result.err().contains("--random-seed expects an integer"), result.err());
    }

    @Test
    void shardSizesReadAsMergekitReadsThem() {
        assertEquals(5_000_000_000L, MergeMoeCommand.size("5B"));
        assertEquals(500_000_000L, MergeMoeCommand.size("500M"));
        assertEquals(1_000L, MergeMoeCommand.size("1k"));
        assertEquals(123L, MergeMoeCommand.size("123"));
        assertThrows(UsageException.class, () -> MergeMoeCommand.size("0"));
    }
}
