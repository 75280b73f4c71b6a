package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.model.safetensors.SafetensorsReader;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** `mixtune merge CONFIG OUT_DIR` takes a mergekit file as mergekit-yaml does. */
class MergekitCliTest {
    private static final Path GOLDEN = Path.of("../merging/src/test/resources/golden/checkpoints").toAbsolutePath()
            .normalize();

    @TempDir
    Path dir;

    /**
     * m0's weight is the gradient [0, 1] over the one layer (t = 1 there, 0 outside the layers), m1's is 1: the layer's
     * tensors are (m0 + m1) / 2, the embeddings, norm and lm_head m1's own.
     */
    @Test
    void aMergekitFileWithAGradientMergesIntoTheDirectoryGivenAfterIt() throws IOException {
        Path config = Files.writeString(dir.resolve("gradient.yml"), """
                models:
                  - model: %s
                    parameters:
                      weight: [0, 1]
                  - model: %s
                    parameters:
                      weight: 1.0
                merge_method: linear
                dtype: float32
                """.formatted(GOLDEN.resolve("m0"), GOLDEN.resolve("m1")));
        Path out = dir.resolve("merged");
        MixtuneCliTest.Result merged = MixtuneCliTest.run("merge", config.toString(), out.toString());
        assertEquals(0, merged.code(), merged.err());
        try (SafetensorsReader m0 = SafetensorsReader.open(GOLDEN.resolve("m0"));
                SafetensorsReader m1 = SafetensorsReader.open(GOLDEN.resolve("m1"));
                SafetensorsReader result = SafetensorsReader.open(out)) {
            float[] a = m0.readFloats("model.layers.0.mlp.up_proj.weight");
            float[] b = m1.readFloats("model.layers.0.mlp.up_proj.weight");
            float[] layer = result.readFloats("model.layers.0.mlp.up_proj.weight");
            for (int j = 0; j < a.length; j++) {
                assertEquals((float) (0.5 * a[j] + 0.5 * b[j]), layer[j], 1e-7);
            }
            float[] head = m1.readFloats("lm_head.weight");
            float[] mergedHead = result.readFloats("lm_head.weight");
            for (int j = 0; j < head.length; j++) {
                assertEquals(head[j], mergedHead[j], 1e-7, "t = 0 outside the layers: m0's weight is 0");
            }
        }
        assertEquals(0, MixtuneCliTest.run("merge", "--config", config.toString(), "--out", dir.resolve("again")
                .toString()).code(), "--config with --out says the same");
        MixtuneCliTest.Result twice = MixtuneCliTest.run("merge", config.toString(), dir.resolve("x").toString(),
                "--out", dir.resolve("y").toString());
        assertEquals(2, twice.code());
        assertTrue(twice.err().contains("give the output directory once"), twice.err());
        MixtuneCliTest.Result none = MixtuneCliTest.run("merge", config.toString());
        assertEquals(2, none.code());
        assertTrue(none.err().contains("out is missing"), none.err());
    }

    @Test
    void aMergekitKeyMixtuneLacksIsNamedAsNotSupportedYet() throws IOException {
        Path config = Files.writeString(dir.resolve("modules.yml"), "merge_method: linear\nmodules:\n"
                + "  vision_tower:\n    models:\n      - model: b\n");
        MixtuneCliTest.Result modules = MixtuneCliTest.run("merge", config.toString(), dir.resolve("out").toString());
        assertEquals(2, modules.code());
        assertTrue(modules.err().contains("not supported yet")
                && modules.err().contains(":3:3: modules 'vision_tower'"), modules.err());
    }

    /**
     * A tokenizer problem is refused with exit 2 before the merge, naming the key: once it failed with exit 1 after
     * the tensors were merged (chat_template with no tokenizer among the merged inputs).
     */
    @Test
    void aTokenizerProblemIsExitTwoBeforeTheMerge() throws IOException {
        Path bare = Files.createDirectories(dir.resolve("bare"));
        for (String file : new String[] {"config.json", "model.safetensors"}) {
            Files.copy(GOLDEN.resolve("m1").resolve(file), bare.resolve(file));
        }
        Path config = Files.writeString(dir.resolve("last.yml"), """
                merge_method: swa
                models:
                  - model: %s
                  - model: %s
                last: 1
                chat_template: chatml
                """.formatted(GOLDEN.resolve("m0"), bare));
        MixtuneCliTest.Result refused = MixtuneCliTest.run("merge", config.toString(), dir.resolve("out").toString());
        assertEquals(2, refused.code(), refused.err());
        assertTrue(refused.err().contains("chat_template is given, but none of [" + bare + "]"), refused.err());
        assertTrue(Files.notExists(dir.resolve("out")));
    }
}
