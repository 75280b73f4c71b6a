package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A merge of PEFT adapters carries the tokenizer files (tokenizer.json, tokenizer_config.json with its chat_template)
 * of its first member that has them, as the adapters mixtune trains and merge-adapter's checkpoints do; both files come
 * from that one member. Members without them give a merged adapter without them.
 */
class AdapterTokenizerFilesTest {
    private static final Path GOLDEN = Path.of("src/test/resources/golden/adapters");

    @TempDir
    Path dir;

    /** A copy of golden adapter {@code name}, with tokenizer files whose template is {@code chatTemplate} unless null. */
    private Path copy(String name, String as, String chatTemplate) throws IOException {
        Path copy = Files.createDirectories(dir.resolve(as));
        try (Stream<Path> files = Files.list(GOLDEN.resolve(name))) {
            for (Path file : files.toList()) {
                Files.copy(file, copy.resolve(file.getFileName()));
            }
        }
        if (chatTemplate != null) {
            // One tokenizer (merging requires it), trained with different chat templates.
            Files.writeString(copy.resolve("tokenizer.json"), "{\"model\": {\"vocab\": {\"<s>\": 1}}}");
            Files.writeString(copy.resolve("tokenizer_config.json"), "{\"chat_template\": \"" + chatTemplate + "\"}");
        }
        return copy;
    }

    private static MergeReport linear(List<Path> inputs, Path out) {
        return ModelMerge.run(new MergeConfig(MergeMethod.LINEAR, null, MergeConfig.models(inputs, null),
                MergeConfig.Parameters.none(), null, null, null, null, out), false, Long.MAX_VALUE);
    }

    @Test
    void mergedAdaptersCarryTheFirstMembersTokenizerFiles() throws IOException {
        Path plain = copy("a0", "plain", null);
        Path chatml = copy("a1", "chatml", "{{ chatml }}");
        Path mistral = copy("a2", "mistral", "{{ mistral }}");

        Path out = dir.resolve("merged");
        linear(List.of(plain, chatml, mistral), out);
        assertFalse(Arrays.equals(Files.readAllBytes(chatml.resolve("tokenizer_config.json")),
                Files.readAllBytes(mistral.resolve("tokenizer_config.json"))));
        for (String file : List.of("tokenizer.json", "tokenizer_config.json")) {
            assertArrayEquals(Files.readAllBytes(chatml.resolve(file)), Files.readAllBytes(out.resolve(file)), file);
        }
        assertTrue(Files.isRegularFile(out.resolve("adapter_model.safetensors")));

        Path none = dir.resolve("none");
        linear(List.of(plain, copy("a1", "plain-too", null)), none);
        assertFalse(Files.exists(none.resolve("tokenizer.json")) || Files.exists(none.resolve("tokenizer_config.json")));
    }
}
