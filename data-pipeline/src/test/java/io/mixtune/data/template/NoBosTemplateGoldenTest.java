package io.mixtune.data.template;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.data.preference.PreferencePair;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.data.preference.PreferenceTokenizer;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A model whose tokenizer has no BOS (config.json's bos_token_id null, tokenizer_config.json's bos_token null), against
 * transformers 5.18 (golden/hf-templates/no-bos/, interop/make_hf_template_goldens.py): its chat templates see
 * bos_token undefined and render none, and plain text gets what tokenizer.json's post-processor adds ({@code <s>} for
 * Mistral's TemplateProcessing, nothing without one).
 */
class NoBosTemplateGoldenTest {
    static TextTokenizer noBos;
    static TextTokenizer noBosNoPostProcessor;

    @BeforeAll
    static void open() throws IOException {
        HfTemplateGoldenTest.conversations.clear(); // its goldens' conversations and tokenizers, loaded afresh
        HfTemplateGoldenTest.open();
        byte[] json = HubTokenizers.json("<unk>", "<s>", "</s>");
        noBos = TextTokenizer.read(new ByteArrayInputStream(json), "no-bos tokenizer.json", TextTokenizer.NO_BOS, 2);
        ObjectMapper mapper = new ObjectMapper();
        ObjectNode bare = (ObjectNode) mapper.readTree(json);
        bare.putNull("post_processor");
        noBosNoPostProcessor = TextTokenizer.read(new ByteArrayInputStream(mapper.writeValueAsBytes(bare)),
                "no-bos tokenizer.json without post-processor", TextTokenizer.NO_BOS, 2);
    }

    @AfterAll
    static void close() {
        HfTemplateGoldenTest.close();
        noBos.close();
        noBosNoPostProcessor.close();
    }

    /** tokenizer_config.json's bos_token null: the template sees none (it rendered "<s>", where transformers renders nothing). */
    static JinjaChatTemplate withoutBos(String name, String source) {
        JinjaChatTemplate template = JinjaChatTemplate.fromTokenizerConfig(name,
                ("{\"bos_token\": null, \"eos_token\": \"</s>\", \"chat_template\": " + quoted(source) + "}")
                        .getBytes(StandardCharsets.UTF_8));
        assertNull(template.bosToken(), name);
        return template;
    }

    static String quoted(String text) {
        try {
            return new ObjectMapper().writeValueAsString(text);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"mistral-7b-instruct-v0.1", "mistral-7b-instruct-v0.3", "openhermes-2.5-chatml"})
    void publishedTemplatesRenderNoBosAsTransformersDoes(String name) throws IOException {
        JinjaChatTemplate template = withoutBos("no-bos/" + name + ".jinja",
                HfTemplateGoldenTest.text("configs/chat-templates/" + name + ".jinja"));
        HfTemplateGoldenTest.assertEveryLineEquals("no-bos/" + name, new HfChatTemplate(template,
                TextTokenizer.NO_BOS, 2), noBos);
        if (name.equals("mistral-7b-instruct-v0.1")) {
            // an ordinary model (config.json's bos_token_id 1) whose tokenizer_config.json sets bos_token null: the
            // same ids (mixtune rendered "<s>" there)
            HfTemplateGoldenTest.assertEveryLineEquals("no-bos/" + name, new HfChatTemplate(template, 1, 2),
                    HfTemplateGoldenTest.hub);
        }
    }

    /** mixtune's built-in mistral template: its Jinja run as transformers runs it, and the built-in renderer. */
    @Test
    void builtInMistralTemplateWritesNoBos() throws IOException {
        HfTemplateGoldenTest.assertEveryLineEquals("no-bos/mistral", new HfChatTemplate(withoutBos("mistral",
                MistralTemplate.JINJA), TextTokenizer.NO_BOS, 2), noBos);
        List<JsonNode> expected = HfTemplateGoldenTest.lines("no-bos/mistral.jsonl");
        MistralTemplate builtIn = new MistralTemplate(TextTokenizer.NO_BOS, 2);
        int compared = 0;
        for (int i = 0; i < expected.size(); i++) {
            Conversation conversation = HfTemplateGoldenTest.conversations.get(i);
            TokenizedSample sample;
            try {
                sample = TemplateGoldenTest.build(builtIn, conversation, noBos);
            } catch (InvalidRecordException e) {
                continue; // shapes the built-in refuses (two users in a row, tool calls)
            }
            assertArrayEquals(TemplateGoldenTest.longs(expected.get(i).get("input_ids")), sample.inputIds(),
                    "line " + (i + 1));
            assertArrayEquals(TemplateGoldenTest.longs(expected.get(i).get("labels")), sample.labels(),
                    "line " + (i + 1));
            compared++;
        }
        assertTrue(compared >= 25, compared + " conversations compared");
    }

    /**
     * template: auto on a tokenizer_config.json whose chat_template is the built-in's Jinja and whose bos_token is
     * null: the built-in renderer without BOS, as transformers renders that Jinja, also where config.json has an id.
     */
    @Test
    void autoTemplateFollowsTheTokenizerConfigsNullBos() throws IOException {
        byte[] config = ("{\"bos_token\": null, \"eos_token\": \"</s>\", \"chat_template\": "
                + quoted(MistralTemplate.JINJA) + "}").getBytes(StandardCharsets.UTF_8);
        TokenizerFile file = new TokenizerFile("tokenizer.json", HubTokenizers.json("<unk>", "<s>", "</s>"), 1, 2,
                "tokenizer_config.json", config);
        DataConfig data = new DataConfig(List.of("chats.jsonl"), null, 0, "auto", "auto", null, 64, false,
                "all_assistant_turns", false);
        ChatTemplate template = data.chatTemplate(file);
        JsonNode golden = HfTemplateGoldenTest.lines("no-bos/mistral.jsonl").get(0);
        assertArrayEquals(TemplateGoldenTest.longs(golden.get("input_ids")), TemplateGoldenTest.build(template,
                HfTemplateGoldenTest.conversations.get(0), HfTemplateGoldenTest.hub).inputIds());
    }

    /** Plain text "with BOS" (a text prompt, TRL's standard-format DPO): what tokenizer.json's post-processor adds. */
    @Test
    void plainTextFollowsThePostProcessor() throws IOException {
        int rows = 0;
        for (JsonNode row : HfTemplateGoldenTest.lines("no-bos/texts.jsonl")) {
            String text = row.get("text").asText();
            assertArrayEquals(TemplateGoldenTest.longs(row.get("post_processor")), noBos.encode(text, true), text);
            assertArrayEquals(TemplateGoldenTest.longs(row.get("no_post_processor")),
                    noBosNoPostProcessor.encode(text, true), text);
            assertArrayEquals(TemplateGoldenTest.longs(row.get("no_post_processor")), noBos.encode(text, false), text);
            rows++;
        }
        assertEquals(8, rows);
    }

    /**
     * A standard pair as TRL 1.13 tokenizes it ({@code processing_class(text=...)}: prompt, prompt + answer + EOS,
     * the completion past the prompt's ids): the post-processor's ids, with and without its {@code <s>}.
     */
    @Test
    void standardPreferencePairFollowsThePostProcessor() throws IOException {
        Map<String, JsonNode> texts = new HashMap<>();
        HfTemplateGoldenTest.lines("no-bos/texts.jsonl").forEach(row -> texts.put(row.get("text").asText(), row));
        String prompt = "Question: why?\nAnswer:";
        PreferencePair pair = new PreferencePair(new PreferencePair.Text(prompt), " because.", " no.", null, null,
                "pairs.jsonl:1");
        for (String processor : List.of("post_processor", "no_post_processor")) {
            TextTokenizer tokenizer = processor.equals("post_processor") ? noBos : noBosNoPostProcessor;
            PreferenceSample sample = new PreferenceTokenizer(new MistralTemplate(TextTokenizer.NO_BOS, 2), tokenizer,
                    64, 2, PreferenceTokenizer.Truncation.KEEP_START).tokenize(pair);
            long[] promptIds = TemplateGoldenTest.longs(texts.get(prompt).get(processor));
            assertArrayEquals(promptIds, sample.promptIds(), processor);
            for (String[] answer : new String[][] {{" because.", "chosen"}, {" no.", "rejected"}}) {
                long[] whole = TemplateGoldenTest.longs(texts.get(prompt + answer[0]).get(processor));
                long[] completion = Arrays.copyOfRange(whole, promptIds.length, whole.length + 1);
                completion[completion.length - 1] = 2; // TRL's EOS after the answer
                assertArrayEquals(completion, answer[1].equals("chosen") ? sample.chosenIds() : sample.rejectedIds(),
                        processor + ", " + answer[1]);
            }
        }
    }
}
