package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.data.template.HfChatTemplate;
import io.mixtune.data.template.JinjaChatTemplate;
import io.mixtune.data.template.MistralTemplate;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `generate --chat` prompts with the model's chat template and its generation prompt (a preset carries mistral's),
 * and `mixtune chat` keeps the conversation: each answer is the one `generate --prompt-ids` gives for the whole
 * conversation so far.
 */
class ChatCommandTest {
    @TempDir
    static Path dir;
    static Path model;

    @BeforeAll
    static void initModel() {
        model = dir.resolve("model");
        assertEquals(0, MixtuneCliTest.run("init-model", "--preset", "tiny-mistral", "--out", model.toString()).code());
    }

    static String ids(long[] ids) {
        return Arrays.stream(ids).mapToObj(Long::toString).collect(Collectors.joining(","));
    }

    static MixtuneCliTest.Result generate(String... args) {
        List<String> all = new ArrayList<>(List.of("generate", "--model", model.toString(), "--max-new-tokens", "6"));
        all.addAll(List.of(args));
        MixtuneCliTest.Result result = MixtuneCliTest.run(all.toArray(String[]::new));
        assertEquals(0, result.code(), result.err());
        return result;
    }

    @Test
    void generateChatPromptsWithTheMistralInstFormat() {
        long[] prompt;
        long[] withSystem;
        try (TextTokenizer tokenizer = TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2)) {
            prompt = tokenizer.encode("[INST] Hello there [/INST]", true);
            withSystem = tokenizer.encode("[INST] Be brief.\n\nHello there [/INST]", true);
        }
        assertEquals(generate("--prompt-ids", ids(prompt), "--output-ids").out(),
                generate("--prompt", "Hello there", "--chat", "--output-ids").out());
        assertEquals(generate("--prompt-ids", ids(withSystem), "--output-ids").out(),
                generate("--prompt", "Hello there", "--chat", "--system", "Be brief.", "--output-ids").out());
    }

    @Test
    void chatOptionsThatDoNotFitAreUsageErrors() {
        MixtuneCliTest.Result system = MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt", "Hi",
                "--system", "Be brief.");
        assertEquals(2, system.code());
        assertTrue(system.err().contains("--system needs --chat"), system.err());
        MixtuneCliTest.Result ids = MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt-ids", "1",
                "--chat");
        assertEquals(2, ids.code());
        assertTrue(ids.err().contains("--chat"), ids.err());
    }

    @Test
    void chatAnswersEachLineWithTheWholeConversationAsPrompt() throws IOException, InterruptedException {
        Path input = dir.resolve("stdin.txt");
        Files.writeString(input, "Hello there\n\nAnd then?\n");
        Path output = dir.resolve("chat.txt");
        List<String> command = new ArrayList<>(List.of(ProcessHandle.current().info().command().orElse("java"),
                "-Dai.djl.offline=true", "-cp", System.getProperty("java.class.path"), Mixtune.class.getName(),
                "chat", "--model", model.toString(), "--system", "Be brief.", "--max-new-tokens", "6"));
        Process chat = new ProcessBuilder(command).redirectInput(input.toFile()).redirectOutput(output.toFile())
                .redirectError(ProcessBuilder.Redirect.DISCARD).start();
        assertTrue(chat.waitFor(5, TimeUnit.MINUTES));
        assertEquals(0, chat.exitValue());

        String first = generate("--prompt", "Hello there", "--chat", "--system", "Be brief.").out().strip();
        long[] second;
        try (TextTokenizer tokenizer = TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2)) {
            HfChatTemplate mistral = new HfChatTemplate(new JinjaChatTemplate("mistral", MistralTemplate.JINJA, "<s>",
                    "</s>"), 1, 2);
            second = mistral.promptIds(List.of(new Message(Role.SYSTEM, "Be brief."),
                    new Message(Role.USER, "Hello there"), new Message(Role.ASSISTANT, first),
                    new Message(Role.USER, "And then?")), tokenizer);
        }
        String secondAnswer = generate("--prompt-ids", ids(second)).out().strip();
        assertEquals(first + "\n" + secondAnswer + "\n", Files.readString(output, StandardCharsets.UTF_8));
    }
}
