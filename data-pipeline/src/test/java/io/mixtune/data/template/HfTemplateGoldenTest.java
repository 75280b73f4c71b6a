package io.mixtune.data.template;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.Message;
import io.mixtune.data.read.ChatFormat;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Real Hub chat templates (configs/chat-templates/) against transformers' apply_chat_template ids and
 * return_assistant_tokens_mask masks (interop/make_hf_template_goldens.py), on 39 conversations each (the last six in
 * shapes mistral-common refuses: consecutive turns of one role, empty answers, tool calls and results, with and
 * without tool definitions): the published
 * template (assistant spans found by rendering prefixes) and the same with {% generation %} blocks (spans from the
 * template), on the bundled tokenizer.json (no special tokens declared: BOS/EOS spliced in by id) and on a Hub one that
 * declares {@code <unk> <s> </s>} special. Templates of other families (Mistral v0.2, Llama 3 and 3.1, Gemma 2, Phi-3,
 * Qwen2.5) on the Hub tokenizer that also declares their markers special ({@link HubTokenizers#IDS}), as a Mistral
 * fine-tune in their format would.
 */
class HfTemplateGoldenTest {
    static final String ALL = "mistral-7b-instruct-v0.1,mixtral-8x7b-instruct-v0.1,mistral-7b-instruct-v0.3,"
            + "zephyr-7b-beta,openhermes-2.5-chatml";
    static TextTokenizer bundled;
    static TextTokenizer hubWithMarkers;
    static TextTokenizer hub;
    static List<Conversation> conversations = new ArrayList<>();

    @BeforeAll
    static void open() throws IOException {
        bundled = TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2);
        hub = HubTokenizers.open("<unk>", "<s>", "</s>");
        hubWithMarkers = HubTokenizers.open("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<start_of_turn>", "<end_of_turn>",
                "<|user|>", "<|assistant|>", "<|end|>");
        int line = 1;
        for (JsonNode record : lines("conversations.jsonl")) {
            conversations.add(ChatFormat.MESSAGES.conversation(record, "conversations.jsonl:" + line++));
        }
    }

    @AfterAll
    static void close() {
        bundled.close();
        hub.close();
        hubWithMarkers.close();
    }

    static List<JsonNode> lines(String name) throws IOException {
        List<JsonNode> rows = new ArrayList<>();
        ObjectMapper json = new ObjectMapper();
        try (BufferedReader in = new BufferedReader(new InputStreamReader(resource("golden/hf-templates/" + name),
                StandardCharsets.UTF_8))) {
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                rows.add(json.readTree(line));
            }
        }
        return rows;
    }

    static InputStream resource(String name) {
        InputStream in = HfTemplateGoldenTest.class.getClassLoader().getResourceAsStream(name);
        if (in == null) {
            throw new IllegalStateException("no resource " + name);
        }
        return in;
    }

    static String text(String resource) throws IOException {
        try (InputStream in = resource(resource)) {
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        }
    }

    /** A template of configs/chat-templates/ as a model's tokenizer_config.json would give it. */
    static HfChatTemplate published(String name) throws IOException {
        return new HfChatTemplate(new JinjaChatTemplate(name + ".jinja",
                text("configs/chat-templates/" + name + ".jinja"), "<s>", "</s>"), 1, 2);
    }

    static HfChatTemplate withGenerationBlocks(String name) throws IOException {
        return new HfChatTemplate(new JinjaChatTemplate(name + ".generation.jinja",
                text("golden/hf-templates/" + name + ".generation.jinja"), "<s>", "</s>"), 1, 2);
    }

    @ParameterizedTest
    @ValueSource(strings = {"mistral-7b-instruct-v0.1", "mixtral-8x7b-instruct-v0.1", "mistral-7b-instruct-v0.3",
            "zephyr-7b-beta", "openhermes-2.5-chatml"})
    void publishedTemplateFindsTheAssistantSpansByPrefixes(String name) throws IOException {
        assertFalse(published(name).template().hasGenerationBlocks());
        assertEveryLineEquals(name, published(name), bundled);
        assertEveryLineEquals(name, published(name), hub);
    }

    @ParameterizedTest
    @ValueSource(strings = {"mistral-7b-instruct-v0.1", "mixtral-8x7b-instruct-v0.1", "mistral-7b-instruct-v0.3",
            "zephyr-7b-beta", "openhermes-2.5-chatml"})
    void generationBlocksMarkWhatTransformersMarks(String name) throws IOException {
        assertTrue(withGenerationBlocks(name).template().hasGenerationBlocks());
        assertEveryLineEquals(name, withGenerationBlocks(name), bundled);
        assertEveryLineEquals(name, withGenerationBlocks(name), hub);
    }

    @ParameterizedTest
    @ValueSource(strings = {"mistral-7b-instruct-v0.2", "llama-3-8b-instruct", "llama-3.1-8b-instruct",
            "gemma-2-9b-it", "phi-3-mini-4k-instruct", "qwen2.5-7b-instruct"})
    void otherFamiliesTemplatesTrainWhatTransformersMarks(String name) throws IOException {
        assertFalse(published(name).template().hasGenerationBlocks());
        assertEveryLineEquals(name, published(name), hubWithMarkers);
        assertTrue(withGenerationBlocks(name).template().hasGenerationBlocks());
        assertEveryLineEquals(name, withGenerationBlocks(name), hubWithMarkers);
    }

    static void assertFalse(boolean value) {
        assertTrue(!value);
    }

    static void assertEveryLineEquals(String name, HfChatTemplate template, TextTokenizer tokenizer)
            throws IOException {
        List<JsonNode> expected = lines(name + ".jsonl");
        assertEquals(39, conversations.size());
        assertEquals(conversations.size(), expected.size());
        int rendered = 0;
        for (int i = 0; i < conversations.size(); i++) {
            Conversation conversation = conversations.get(i);
            JsonNode golden = expected.get(i);
            String where = name + ", line " + (i + 1);
            if (golden.has("error")) {
                JinjaChatTemplate.TemplateException e = assertThrows(JinjaChatTemplate.TemplateException.class,
                        () -> TemplateGoldenTest.build(template, conversation, tokenizer), where);
                assertTrue(e.getMessage().contains(golden.get("error").asText()), e.getMessage());
                assertTrue(e.getMessage().contains(name), e.getMessage());
                continue;
            }
            TokenizedSample sample = TemplateGoldenTest.build(template, conversation, tokenizer);
            assertArrayEquals(TemplateGoldenTest.longs(golden.get("input_ids")), sample.inputIds(), "ids, " + where);
            assertArrayEquals(TemplateGoldenTest.longs(golden.get("labels")), sample.labels(), "labels, " + where);
            List<Message> question = conversation.messages().subList(0, conversation.messages().size() - 1);
            assertArrayEquals(TemplateGoldenTest.longs(golden.get("prompt_ids")), template.promptIds(question,
                    tokenizer), "generation prompt, " + where);
            rendered++;
        }
        assertTrue(rendered >= 20, name + ": " + rendered + " conversations rendered");
    }
}
