package io.mixtune.data.dataset;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.data.template.ChatMlTemplate;
import io.mixtune.data.template.HfChatTemplate;
import io.mixtune.data.template.MistralTemplate;
import io.mixtune.model.config.ModelPreset;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code data.template: auto} and {@code hf} read the model's tokenizer_config.json: auto takes its chat_template
 * (a string, or the "default" of a named list) and falls back to mistral without one; hf requires it.
 */
class ModelChatTemplateTest {
    @TempDir
    Path dir;

    DataConfig data(String template) throws IOException {
        Path chats = dir.resolve("a.jsonl");
        if (!Files.exists(chats)) {
            Files.writeString(chats, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},"
                    + "{\"role\":\"assistant\",\"content\":\"Hello!\"}]}\n");
        }
        return new DataConfig(List.of(chats.toString()), null, 0, "auto", template, null, 64, false, "all_assistant_turns",
                false);
    }

    TokenizerFile model(Object chatTemplate) throws IOException {
        Path model = Files.createDirectories(dir.resolve("model"));
        try (var in = getClass().getClassLoader().getResourceAsStream(ModelPreset.MISTRAL_V1_TOKENIZER)) {
            Files.write(model.resolve("tokenizer.json"), in.readAllBytes());
        }
        if (chatTemplate != null) {
            ObjectNode config = new ObjectMapper().createObjectNode().put("bos_token", "<s>");
            config.putObject("eos_token").put("content", "</s>");
            config.set("chat_template", new ObjectMapper().valueToTree(chatTemplate));
            Files.write(model.resolve("tokenizer_config.json"), new ObjectMapper().writeValueAsBytes(config));
        }
        return TokenizerFile.of(model.resolve("tokenizer.json"), 1, 2);
    }

    @Test
    void autoIsMistralWithoutAChatTemplateAndKeysAsMistral() throws IOException {
        TokenizerFile bare = model(null);
        assertInstanceOf(MistralTemplate.class, data("auto").chatTemplate(bare));
        TokenizerFile bundled = TokenizerFile.resource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2);
        assertInstanceOf(MistralTemplate.class, data("auto").chatTemplate(bundled));
        assertEquals(SampleCache.key(data("mistral"), bundled, 42), SampleCache.key(data("auto"), bundled, 42));
    }

    @Test
    void autoAndHfUseTheModelsTemplateAndKeyOnIt() throws IOException {
        TokenizerFile chatml = model(ChatMlTemplate.JINJA);
        HfChatTemplate template = assertInstanceOf(HfChatTemplate.class, data("auto").chatTemplate(chatml));
        assertEquals(ChatMlTemplate.JINJA, template.jinja());
        assertEquals("</s>", template.template().eosToken());
        assertInstanceOf(HfChatTemplate.class, data("hf").chatTemplate(chatml));
        assertNotEquals(SampleCache.key(data("mistral"), chatml, 42), SampleCache.key(data("auto"), chatml, 42));
        // mixtune's own mistral Jinja runs on the built-in renderer (the same ids, BuiltInJinjaTest)
        assertInstanceOf(MistralTemplate.class, data("auto").chatTemplate(model(MistralTemplate.JINJA)));
    }

    /**
     * transformers 5 saves a tokenizer's template as chat_template.jinja and none in tokenizer_config.json (its
     * save_chat_templates), and AutoTokenizer reads that file before the config's key (tokenization_utils_base's
     * "independent chat template file(s) ... take priority"): a model saved so, or merged by mixtune or mergekit, has its
     * template there. Before, auto fell back to mistral on such a model, silently.
     */
    @Test
    void chatTemplateJinjaIsTheModelsTemplateBeforeTokenizerConfigs() throws IOException {
        model(null);
        ObjectNode config = new ObjectMapper().createObjectNode().put("bos_token", "<s>");
        config.putObject("eos_token").put("content", "</s>");
        Files.write(dir.resolve("model/tokenizer_config.json"), new ObjectMapper().writeValueAsBytes(config));
        TokenizerFile configOnly = TokenizerFile.of(dir.resolve("model/tokenizer.json"), 1, 2);
        Files.writeString(dir.resolve("model/chat_template.jinja"), ChatMlTemplate.JINJA);
        TokenizerFile saved = TokenizerFile.of(dir.resolve("model/tokenizer.json"), 1, 2);
        HfChatTemplate template = assertInstanceOf(HfChatTemplate.class, data("auto").chatTemplate(saved));
        assertEquals(ChatMlTemplate.JINJA, template.jinja());
        assertEquals("</s>", template.template().eosToken(), "bos and eos tokens still come from tokenizer_config.json");
        assertInstanceOf(HfChatTemplate.class, data("hf").chatTemplate(saved));
        assertNotEquals(SampleCache.key(data("auto"), configOnly, 42), SampleCache.key(data("auto"), saved, 42));

        TokenizerFile both = model(MistralTemplate.JINJA);
        assertEquals(ChatMlTemplate.JINJA,
                assertInstanceOf(HfChatTemplate.class, data("auto").chatTemplate(both)).jinja(), "the file wins");
        Files.delete(dir.resolve("model/tokenizer_config.json"));
        TokenizerFile noConfig = TokenizerFile.of(dir.resolve("model/tokenizer.json"), 1, 2);
        assertEquals(ChatMlTemplate.JINJA,
                assertInstanceOf(HfChatTemplate.class, data("hf").chatTemplate(noConfig)).jinja());
    }

    @Test
    void aNamedListUsesItsDefault() throws IOException {
        TokenizerFile listed = model(List.of(Map.of("name", "tool_use", "template", "{{ 'tools' }}"),
                Map.of("name", "default", "template", ChatMlTemplate.JINJA)));
        assertEquals(ChatMlTemplate.JINJA, data("hf").chatTemplate(listed).jinja());
        TokenizerFile noDefault = model(List.of(Map.of("name", "tool_use", "template", "{{ 'tools' }}")));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> data("auto").chatTemplate(noDefault));
        assertTrue(e.getMessage().contains("tokenizer_config.json") && e.getMessage().contains("default"),
                e.getMessage());
    }

    @Test
    void hfWithoutAChatTemplateNamesTheFile() throws IOException {
        TokenizerFile bare = model(null);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> data("hf").chatTemplate(bare));
        assertTrue(e.getMessage().startsWith("template: hf"), e.getMessage());
        assertTrue(e.getMessage().contains(dir.resolve("model").resolve("tokenizer_config.json").toString()),
                e.getMessage());
        IllegalArgumentException unknown = assertThrows(IllegalArgumentException.class, () -> data("llama3"));
        assertTrue(unknown.getMessage().contains("auto, hf, hf:NAME, mistral, chatml or custom"),
                unknown.getMessage());
    }

    @Test
    void tokenizedThroughTheCacheWithTheModelsTemplate() throws IOException {
        TokenizerFile chatml = model(ChatMlTemplate.JINJA);
        Path chats = dir.resolve("chats.jsonl");
        Files.writeString(chats, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},"
                + "{\"role\":\"assistant\",\"content\":\"Hello!\"}]}\n");
        DataConfig config = new DataConfig(List.of(chats.toString()), null, 0, "auto", "auto", null, 64, false,
                "all_assistant_turns", false);
        ChatDataset viaModel = SampleCache.tokenize(config, chatml, 1);
        DataConfig builtIn = new DataConfig(List.of(chats.toString()), null, 0, "auto", "chatml", null, 64, false,
                "all_assistant_turns", false);
        ChatDataset viaBuiltIn = SampleCache.tokenize(builtIn, chatml, 1);
        assertArrayEquals(viaBuiltIn.train().get(0).inputIds(), viaModel.train().get(0).inputIds());
        assertArrayEquals(viaBuiltIn.train().get(0).labels(), viaModel.train().get(0).labels());
    }
}
