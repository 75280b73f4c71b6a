package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** mergekit-moe configs mixtune cannot build: refused naming the file, line, key and what was expected. */
class MoeConfigErrorsTest {
    private static final Path GOLDEN = MoeMergeTest.GOLDEN;
    private static final String EXPERTS = "experts:\n"
            + "  - source_model: " + GOLDEN.resolve("expert1") + "\n    positive_prompts: [\"doctor\"]\n"
            + "  - source_model: " + GOLDEN.resolve("expert2") + "\n    positive_prompts: [\"python\"]\n";

    private static String read(Path dir, String yaml) throws IOException {
        Path file = dir.resolve("moe.yml");
        Files.writeString(file, yaml);
        return assertThrows(IllegalArgumentException.class, () -> MoeYaml.read(file)).getMessage();
    }

    private static String base() {
        return "base_model: " + GOLDEN.resolve("base") + "\n";
    }

    @Test
    void unknownKeyNamesFileLineAndTheNearestKey(@TempDir Path dir) throws IOException {
        String message = read(dir, base() + "gate_mdoe: hidden\n" + EXPERTS);
        assertTrue(message.contains("moe.yml:2:1: unknown key 'gate_mdoe'"), message);
        assertTrue(message.contains("did you mean 'gate_mode'"), message);
        message = read(dir, base() + EXPERTS + "    positive_prompt: [\"x\"]\n");
        assertTrue(message.contains("unknown key 'positive_prompt' in experts[1]"), message);
    }

    @Test
    void badValuesNameKeyAndWhatWasExpected(@TempDir Path dir) throws IOException {
        String message = read(dir, base() + "gate_mode: hiden\n" + EXPERTS);
        assertTrue(message.contains("moe.yml:2") && message.contains("gate_mode must be one of hidden, cheap_embed,"
                + " random, uniform_random, got 'hiden'"), message);
        message = read(dir, base() + "gate_mode: hidden_avg\n" + EXPERTS);
        assertTrue(message.contains("hidden_avg is not supported yet"), message);
        message = read(dir, base() + "dtype: int8\n" + EXPERTS);
        assertTrue(message.contains("moe.yml:2") && message.contains("dtype must be bfloat16, float16 or float32"),
                message);
        message = read(dir, base() + "experts_per_token: 3\n" + EXPERTS);
        assertTrue(message.contains("experts_per_token is 3 but experts lists only 2"), message);
        message = read(dir, base() + "experts:\n  - source_model: " + GOLDEN.resolve("expert1") + "\n  - source_model: "
                + GOLDEN.resolve("expert2") + "\n");
        assertTrue(message.contains("experts[0]") && message.contains("has no positive_prompts"), message);
        message = read(dir, base() + "experts:\n  - source_model: a+b+c\n    positive_prompts: [x]\n");
        assertTrue(message.contains("PATH or PATH+ADAPTER"), message);
    }

    @Test
    void mergekitKeysMixtuneDoesNotTakeAreRefusedByName(@TempDir Path dir) throws IOException {
        String message = read(dir, base() + EXPERTS + "shared_experts:\n  - source_model: x\n");
        assertTrue(message.contains("shared_experts: shared experts are for the qwen and deepseek outputs"), message);
        message = read(dir, base() + "architecture: qwen\n" + EXPERTS);
        assertTrue(message.contains("moe.yml:2:1: architecture 'qwen': mixtune writes Mixtral only"), message);
        message = read(dir, base() + "tokenizer_source: base\n" + EXPERTS);
        assertTrue(message.contains("tokenizer_source: mergekit-moe has no tokenizer_source key"), message);
        message = read(dir, base() + "merge_method: linear\n" + EXPERTS);
        assertTrue(message.contains("run mixtune merge"), message);
        Path file = dir.resolve("ok.yml");
        Files.writeString(file, base() + "architecture: Mixtral\n" + EXPERTS);
        assertEquals(2, MoeYaml.read(file).experts().size());
    }

    private static String run(Path dir, String yaml, Path out) throws IOException {
        Path file = dir.resolve("moe.yml");
        Files.writeString(file, yaml);
        MoeConfig config = MoeYaml.read(file);
        return assertThrows(IllegalArgumentException.class, () -> MoeMerge.run(config, yaml, out,
                new MoeMerge.Options(false, 0, false, Device.cpu(), RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES)))
                .getMessage();
    }

    @Test
    void expertsOfOtherShapesAreRefusedNamingBothModels(@TempDir Path dir) throws IOException {
        Path other = Path.of("src/test/resources/golden/checkpoints/m0").toAbsolutePath();
        String message = run(dir, base() + "gate_mode: random\nexperts:\n  - source_model: " + GOLDEN.resolve("expert1")
                + "\n  - source_model: " + other + "\n", dir.resolve("out"));
        assertTrue(message.contains("expert " + other) && message.contains("base_model " + GOLDEN.resolve("base")),
                message);
        assertFalse(Files.exists(dir.resolve("out")), "nothing is written");
    }

    @Test
    void copiesOfOneModelWithPromptGatesNeedTheFlag(@TempDir Path dir) throws IOException {
        String message = run(dir, base() + "experts:\n"
                + "  - source_model: " + GOLDEN.resolve("base") + "\n    positive_prompts: [doctor]\n"
                + "  - source_model: " + GOLDEN.resolve("base") + "\n    positive_prompts: [python]\n",
                dir.resolve("out"));
        assertTrue(message.contains(MoeMerge.ALL_SAME_FLAG), message);
    }

    @Test
    void aNonEmptyOutIsNotReplacedAndLeftAsItWas(@TempDir Path dir) throws IOException {
        Path out = dir.resolve("out");
        Files.createDirectories(out);
        Files.writeString(out.resolve("keep.txt"), "mine");
        String message = run(dir, base() + "gate_mode: random\n" + EXPERTS, out);
        assertTrue(message.contains("exists and is not empty"), message);
        assertEquals(List.of(out.resolve("keep.txt")), Files.list(out).toList());
        assertEquals("mine", Files.readString(out.resolve("keep.txt")));
    }

    @Test
    void anAdapterGivenAsAModelSaysHowToNameIt(@TempDir Path dir) throws IOException {
        String message = run(dir, base() + "gate_mode: random\nexperts:\n  - source_model: " + GOLDEN.resolve("lora")
                + "\n  - source_model: " + GOLDEN.resolve("expert2") + "\n", dir.resolve("out"));
        assertTrue(message.contains("this is a PEFT adapter: write BASE+"), message);
    }

    /** A config that says architecture: mixtral still has its bad values reported with their line. */
    @Test
    void badValuesBesideArchitectureStillNameTheirLine(@TempDir Path dir) throws IOException {
        String message = read(dir, base() + "architecture: mixtral\ngate_mode: hiden\n" + EXPERTS);
        assertTrue(message.contains("moe.yml:3") && message.contains("got 'hiden'"), message);
    }

    /**
     * A prompt holding a token the base's embedding has no row for (a ChatML token added to the tokenizer, the model
     * never resized) is refused naming the prompt and the sizes, for both prompt modes, before anything is written.
     */
    @ParameterizedTest
    @ValueSource(strings = {"cheap_embed", "hidden"})
    void aPromptTokenPastTheEmbeddingIsRefused(String gateMode, @TempDir Path dir) throws IOException {
        Path base = Files.createDirectories(dir.resolve("base"));
        for (String file : List.of("config.json", "model.safetensors", "tokenizer_config.json")) {
            Files.copy(GOLDEN.resolve("base").resolve(file), base.resolve(file));
        }
        com.fasterxml.jackson.databind.ObjectMapper json = new com.fasterxml.jackson.databind.ObjectMapper();
        com.fasterxml.jackson.databind.node.ObjectNode tokenizer = (com.fasterxml.jackson.databind.node.ObjectNode)
                json.readTree(GOLDEN.resolve("base/tokenizer.json").toFile());
        ((com.fasterxml.jackson.databind.node.ArrayNode) tokenizer.get("added_tokens")).addObject().put("id", 27)
                .put("content", "<|im_start|>").put("single_word", false).put("lstrip", false).put("rstrip", false)
                .put("normalized", false).put("special", true);
        json.writeValue(base.resolve("tokenizer.json").toFile(), tokenizer);
        String message = run(dir, "base_model: " + base + "\ngate_mode: " + gateMode + "\nexperts:\n"
                + "  - source_model: " + GOLDEN.resolve("expert1") + "\n    positive_prompts: [\"<|im_start|>doctor\"]\n"
                + "  - source_model: " + GOLDEN.resolve("expert2") + "\n    positive_prompts: [\"python\"]\n",
                dir.resolve("out"));
        assertTrue(message.contains("<|im_start|>doctor") && message.contains("27"), message);
        assertFalse(Files.exists(dir.resolve("out")), "nothing is written");
    }
}
