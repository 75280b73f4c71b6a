package io.mixtune.data.template;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.data.read.ChatFormat;
import io.mixtune.data.chat.Conversation;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code data.template: hf:NAME} picks a template of the model folder's additional_chat_templates/ (or "default", its
 * chat_template.jinja) as transformers 5.18's apply_chat_template(chat_template=NAME) does: the ids of every named
 * template on eight conversations equal transformers' on the same folder (interop/make_named_template_goldens.py,
 * golden/hf-templates/named.json). A folder with named templates and no chat_template.jinja has no default, as in
 * transformers (whatever tokenizer_config.json says): a chat needs a name there. An unknown name lists the folder's.
 */
class NamedTemplateGoldenTest {
    private static final Map<String, String> FOLDER = Map.of("chat_template.jinja", "mistral-7b-instruct-v0.3",
            "additional_chat_templates/chatml.jinja", "openhermes-2.5-chatml",
            "additional_chat_templates/zephyr.jinja", "zephyr-7b-beta");

    @TempDir
    Path dir;

    private Path folder(String name, boolean withDefault, String configTemplate) throws IOException {
        Path model = Files.createDirectories(dir.resolve(name).resolve("additional_chat_templates")).getParent();
        Files.write(model.resolve("tokenizer.json"), HubTokenizers.json("<unk>", "<s>", "</s>"));
        ObjectNode config = new ObjectMapper().createObjectNode().put("bos_token", "<s>").put("eos_token", "</s>");
        if (configTemplate != null) {
            config.put("chat_template", configTemplate);
        }
        Files.write(model.resolve("tokenizer_config.json"), new ObjectMapper().writeValueAsBytes(config));
        for (Map.Entry<String, String> file : FOLDER.entrySet()) {
            if (withDefault || !file.getKey().equals("chat_template.jinja")) {
                Files.writeString(model.resolve(file.getKey()),
                        HfTemplateGoldenTest.text("configs/chat-templates/" + file.getValue() + ".jinja"));
            }
        }
        return model.resolve("tokenizer.json");
    }

    private DataConfig data(String template) throws IOException {
        Path chats = dir.resolve("a.jsonl");
        if (!Files.exists(chats)) {
            Files.writeString(chats, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},"
                    + "{\"role\":\"assistant\",\"content\":\"Hello!\"}]}\n");
        }
        return new DataConfig(List.of(chats.toString()), null, 0, "auto", template, null, 64, false,
                "all_assistant_turns", false);
    }

    @Test
    void everyNamedTemplateGivesTransformersIds() throws IOException {
        JsonNode golden = new ObjectMapper().readTree(HfTemplateGoldenTest.text("golden/hf-templates/named.json"));
        golden.get("folder").fields().forEachRemaining(f -> assertEquals(FOLDER.get(f.getKey()), f.getValue().asText()));
        TokenizerFile model = TokenizerFile.of(folder("named", true, null), 1, 2);
        try (TextTokenizer tokenizer = HubTokenizers.open("<unk>", "<s>", "</s>")) {
            int rows = 0;
            for (JsonNode row : golden.get("rows")) {
                String name = row.get("template").asText();
                Conversation conversation = ChatFormat.MESSAGES.conversation(row, "named.json, " + name);
                ChatTemplate template = data("hf:" + name).chatTemplate(model);
                TokenizedSample sample = TemplateGoldenTest.build(template, conversation, tokenizer);
                assertArrayEquals(TemplateGoldenTest.longs(row.get("input_ids")), sample.inputIds(),
                        name + ", " + row.get("conversation").asText());
                rows++;
            }
            assertEquals(24, rows);
        }
        assertEquals(data("hf:default").chatTemplate(model).jinja(), data("hf").chatTemplate(model).jinja());
        assertEquals(data("hf:default").chatTemplate(model).jinja(), data("auto").chatTemplate(model).jinja());
        assertNotEquals(SampleCache.key(data("hf:chatml"), model, 42), SampleCache.key(data("hf:zephyr"), model, 42));
    }

    @Test
    void anUnknownNameListsTheModelsTemplates() throws IOException {
        TokenizerFile model = TokenizerFile.of(folder("named", true, null), 1, 2);
        IllegalArgumentException unknown = assertThrows(IllegalArgumentException.class,
                () -> data("hf:chatm").chatTemplate(model));
        assertTrue(unknown.getMessage().contains("template: hf:chatm: the model has no chat template named \"chatm\""
                + ": its templates are [chatml, default, zephyr]"), unknown.getMessage());
        Path single = Files.createDirectories(dir.resolve("single"));
        Files.write(single.resolve("tokenizer.json"), HubTokenizers.json("<unk>", "<s>", "</s>"));
        Files.writeString(single.resolve("chat_template.jinja"), ChatMlTemplate.JINJA);
        TokenizerFile one = TokenizerFile.of(single.resolve("tokenizer.json"), 1, 2);
        IllegalArgumentException none = assertThrows(IllegalArgumentException.class,
                () -> data("hf:chatml").chatTemplate(one));
        assertTrue(none.getMessage().contains("template: hf:chatml: the model has no named chat templates (no "
                + single.resolve("additional_chat_templates") + "/*.jinja, no list in tokenizer_config.json): use "
                + "template: hf for its one template"), none.getMessage());
        IllegalArgumentException empty = assertThrows(IllegalArgumentException.class, () -> data("hf:"));
        assertTrue(empty.getMessage().contains("auto, hf, hf:NAME, mistral, chatml or custom"), empty.getMessage());
    }

    @Test
    void withoutADefaultAChatNeedsAName() throws IOException {
        JsonNode golden = new ObjectMapper().readTree(HfTemplateGoldenTest.text("golden/hf-templates/named.json"));
        for (String configTemplate : new String[] {null, "{{ 'the config string transformers drops' }}"}) {
            TokenizerFile model = TokenizerFile.of(folder(configTemplate == null ? "files" : "config", false,
                    configTemplate), 1, 2);
            for (String template : List.of("auto", "hf")) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                        () -> data(template).chatTemplate(model));
                assertTrue(e.getMessage().contains("no chat_template.jinja, so no default template (transformers: \""
                        + golden.get("no_default").get("files_only").asText() + "\"): set data.template: hf:NAME"),
                        e.getMessage());
            }
            assertInstanceOf(HfChatTemplate.class, data("hf:chatml").chatTemplate(model));
        }
    }
}
