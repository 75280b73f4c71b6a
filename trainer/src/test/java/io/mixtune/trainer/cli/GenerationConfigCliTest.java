package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.data.template.HfChatTemplate;
import io.mixtune.data.template.JinjaChatTemplate;
import io.mixtune.data.template.MistralTemplate;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.recipe.RecipeValueException;
import io.mixtune.trainer.run.EvalSamples;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingModel;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.apache.commons.cli.DefaultParser;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A model folder's generation_config.json, read as transformers reads it: generation stops at any of its EOS ids
 * (generate, proxy-tuning, best-of-n's answers, chat), and with no decoding flag its do_sample, temperature and top-k
 * decide how tokens are chosen; flags override each value.
 */
class GenerationConfigCliTest {
    private static final String PROMPT = "1,415,2936,9060";

    @TempDir
    static Path dir;
    static Path model;
    /** Greedy ids of the model without generation_config.json. */
    static List<String> greedy;

    @BeforeAll
    static void initModel() {
        model = dir.resolve("model");
        assertEquals(0, MixtuneCliTest.run("init-model", "--preset", "tiny-mistral", "--out", model.toString(),
                "--seed", "3").code());
        greedy = ids(generate("--greedy"));
        assertEquals(8, greedy.size());
    }

    private static MixtuneCliTest.Result generate(String... options) {
        List<String> args = new ArrayList<>(List.of("generate", "--model", model.toString(), "--prompt-ids", PROMPT,
                "--max-new-tokens", "8", "--output-ids"));
        args.addAll(List.of(options));
        MixtuneCliTest.Result result = MixtuneCliTest.run(args.toArray(String[]::new));
        assertEquals(0, result.code(), result.err());
        return result;
    }

    private static List<String> ids(MixtuneCliTest.Result result) {
        return List.of(result.lastLine().split(","));
    }

    private static void writeGenerationConfig(String json) throws Exception {
        Files.writeString(model.resolve("generation_config.json"), json);
    }

    /** The third greedy token, listed after EOS as an end-of-turn id: generation stops there, as transformers' does. */
    private static int endOfTurnAtTheThirdToken() throws Exception {
        int third = Integer.parseInt(greedy.get(2));
        assertTrue(!greedy.subList(0, 2).contains(greedy.get(2)), "the third token first appears third: " + greedy);
        writeGenerationConfig("{\"bos_token_id\": 1, \"eos_token_id\": [2, " + third + "], \"do_sample\": false}");
        return third;
    }

    @Test
    void generateStopsAtAnyEosIdOfGenerationConfig() throws Exception {
        try {
            endOfTurnAtTheThirdToken();
            assertEquals(greedy.subList(0, 3), ids(generate()));
            assertEquals(greedy.subList(0, 3), ids(generate("--greedy")));
            // proxy-tuning with the model as large, small base and small tuned: the large model's EOS ids end it
            assertEquals(greedy.subList(0, 3), ids(generate("--proxy-base", model.toString(), "--proxy-tuned",
                    model.toString())));
        } finally {
            Files.deleteIfExists(model.resolve("generation_config.json"));
        }
    }

    @Test
    void chatStopsAtAnyEosIdOfGenerationConfig() throws Exception {
        long[] prompt;
        try (TextTokenizer tokenizer = TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2)) {
            HfChatTemplate mistral = new HfChatTemplate(new JinjaChatTemplate("mistral", MistralTemplate.JINJA, "<s>",
                    "</s>"), 1, 2);
            prompt = mistral.promptIds(List.of(new Message(Role.USER, "Hello there")), tokenizer);
        }
        String promptIds = String.join(",", Arrays.stream(prompt).mapToObj(Long::toString).toList());
        List<String> answer = List.of(MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt-ids",
                promptIds, "--max-new-tokens", "8", "--output-ids").lastLine().split(","));
        int stop = Integer.parseInt(answer.get(1));
        assertTrue(!answer.get(0).equals(answer.get(1)), answer.toString());
        try {
            writeGenerationConfig("{\"eos_token_id\": [2, " + stop + "]}");
            ChatCommand chat = new ChatCommand(new ByteArrayInputStream("Hello there\n".getBytes(StandardCharsets.UTF_8)));
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            assertEquals(0, chat.run(new DefaultParser().parse(chat.options(), new String[] {"--model",
                    model.toString(), "--max-new-tokens", "8"}), new PrintStream(out, true, StandardCharsets.UTF_8)));
            String expected;
            try (TextTokenizer tokenizer = TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2)) {
                expected = tokenizer.decode(new long[] {Long.parseLong(answer.get(0)), stop});
            }
            assertEquals(expected.strip(), out.toString(StandardCharsets.UTF_8).strip());
        } finally {
            Files.deleteIfExists(model.resolve("generation_config.json"));
        }
    }

    /** train.eval_prompts answers on a base with an end-of-turn id stop where `generate --chat` stops. */
    @Test
    void evalPromptsStopAtAnyEosIdOfTheBasesGenerationConfig() throws Exception {
        List<String> free = ids(MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt", "Hello there",
                "--chat", "--max-new-tokens", "8", "--output-ids"));
        assertTrue(!free.get(1).equals(free.get(0)) && !free.get(1).equals("2"), free.toString());
        try {
            writeGenerationConfig("{\"eos_token_id\": [2, " + free.get(1) + "]}");
            MixtuneCliTest.Result stopped = MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt",
                    "Hello there", "--chat", "--max-new-tokens", "8", "--output-ids");
            assertEquals(free.subList(0, 2), ids(stopped));
            Recipe recipe = evalPromptRecipe();
            try (TrainingModel training = TrainingModel.load(recipe, note -> { })) {
                // PEFT's init leaves B at zero: the fresh adapter answers as the base does
                List<TrainingListener.Sample> samples = EvalSamples.of(recipe, training).generate(training);
                assertEquals(stopped.out().strip().lines().findFirst().orElseThrow(), samples.get(0).completion());
            }
        } finally {
            Files.deleteIfExists(model.resolve("generation_config.json"));
        }
    }

    /** A one-step recipe on the model whose train.eval_prompts is "Hello there", 8 new tokens. */
    private static Recipe evalPromptRecipe() throws Exception {
        Path chats = dir.resolve("chats.jsonl");
        try (java.util.stream.Stream<String> lines = Files.lines(Path.of("../data/samples/chats.jsonl"))) {
            Files.write(chats, lines.limit(8).toList());
        }
        Path recipeFile = dir.resolve("eval-prompts-decoding.yaml");
        Files.writeString(recipeFile, """
                model:
                  path: %s
                  quantize: none
                lora:
                  r: 4
                  alpha: 8
                  targets: [q_proj]
                data:
                  files: [%s]
                  max_seq_len: 96
                train:
                  max_steps: 1
                  eval_prompts: ["Hello there"]
                  eval_max_new_tokens: 8
                output_dir: %s
                """.formatted(model, chats, dir.resolve("eval-prompts-decoding-out")));
        return RecipeReader.read(recipeFile, List.of()).recipe();
    }

    /**
     * train.eval_prompts decode as `generate` does without flags, as TRL's LogCompletionsCallback (generate() with the
     * model's generation_config) does: the file's sampling settings and repetition penalty, seed 0.
     */
    @Test
    void evalPromptsDecodeAsTheBasesGenerationConfigSaysAsGenerateDoes() throws Exception {
        Recipe recipe = evalPromptRecipe();
        try {
            writeGenerationConfig("{\"do_sample\": true, \"temperature\": 1.5, \"top_k\": 40, "
                    + "\"repetition_penalty\": 1.3}");
            String sampled = MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt", "Hello there",
                    "--chat", "--max-new-tokens", "8").out().strip();
            String greedyAnswer = MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt",
                    "Hello there", "--chat", "--max-new-tokens", "8", "--greedy", "--repetition-penalty", "1")
                    .out().strip();
            assertNotEquals(greedyAnswer, sampled, "the file's sampling changes the answer");
            try (TrainingModel training = TrainingModel.load(recipe, note -> { })) {
                // PEFT's init leaves B at zero: the fresh adapter answers as the base does
                assertEquals(sampled, EvalSamples.of(recipe, training).generate(training).get(0).completion());
            }

            writeGenerationConfig("{\"repetition_penalty\": 1.3}");
            String penalized = MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt", "Hello there",
                    "--chat", "--max-new-tokens", "8").out().strip();
            try (TrainingModel training = TrainingModel.load(recipe, note -> { })) {
                assertEquals(penalized, EvalSamples.of(recipe, training).generate(training).get(0).completion());
            }

            writeGenerationConfig("{\"do_sample\": true, \"temperature\": 0}");
            try (TrainingModel training = TrainingModel.load(recipe, note -> { })) {
                RecipeValueException refused = assertThrows(RecipeValueException.class,
                        () -> EvalSamples.of(recipe, training));
                assertTrue(refused.getMessage().contains("train.eval_prompts")
                        && refused.getMessage().contains("generation_config.json: temperature 0"),
                        refused.getMessage());
            }
        } finally {
            Files.deleteIfExists(model.resolve("generation_config.json"));
        }
    }

    @Test
    void withoutFlagsGenerationConfigsSamplingSettingsDecideAndFlagsOverrideThem() throws Exception {
        try {
            writeGenerationConfig("{\"do_sample\": true, \"temperature\": 1.5, \"top_k\": 40}");
            List<String> asTheFileSays = ids(generate());
            assertNotEquals(greedy, asTheFileSays, "do_sample true samples");
            assertEquals(asTheFileSays, ids(generate("--temperature", "1.5", "--top-k", "40", "--seed", "0")));
            assertEquals(asTheFileSays, ids(generate("--seed", "0")), "a flag overrides only its own value");
            assertEquals(greedy, ids(generate("--greedy")));
            assertEquals(greedy, ids(generate("--top-k", "1")), "top-k 1 keeps the most likely token alone");
        } finally {
            Files.deleteIfExists(model.resolve("generation_config.json"));
        }
    }

    @Test
    void badGenerationConfigValuesAndFlagsAreUsageErrors() throws Exception {
        try {
            writeGenerationConfig("{\"eos_token_id\": [2, \"x\"]}");
            MixtuneCliTest.Result bad = MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt-ids",
                    PROMPT);
            assertEquals(2, bad.code());
            assertTrue(bad.err().contains("generation_config.json: eos_token_id must be a token id in [0, 32000)"),
                    bad.err());
            writeGenerationConfig("{\"do_sample\": false, \"temperature\": 0.0}");
            MixtuneCliTest.Result sampled = MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt-ids",
                    PROMPT, "--seed", "1");
            assertEquals(2, sampled.code());
            assertTrue(sampled.err().contains("generation_config.json: temperature 0.0 cannot be sampled with"),
                    sampled.err());
        } finally {
            Files.deleteIfExists(model.resolve("generation_config.json"));
        }
        MixtuneCliTest.Result topK = MixtuneCliTest.run("generate", "--model", model.toString(), "--prompt-ids",
                PROMPT, "--top-k", "-1");
        assertEquals(2, topK.code());
        assertTrue(topK.err().contains("top-k must be >= 0"), topK.err());
        MixtuneCliTest.Result greedyAndTopK = MixtuneCliTest.run("generate", "--model", model.toString(),
                "--prompt-ids", PROMPT, "--greedy", "--top-k", "5");
        assertEquals(2, greedyAndTopK.code());
        assertTrue(greedyAndTopK.err().contains("--greedy does not go with --top-k"), greedyAndTopK.err());
    }
}
