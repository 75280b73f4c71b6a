package io.mixtune.merging;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.data.template.JinjaChatTemplate;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.junit.jupiter.api.Test;

/**
 * mixtune's text of each of mergekit's bundled chat templates renders, as mixtune renders templates (Jinjava,
 * {@link JinjaChatTemplate}), what mergekit's own file renders with transformers: the renderings in
 * bundled_chat_templates.json (make_bundled_template_goldens.py), both without and with add_generation_prompt, a
 * template's raise_exception included. Conversations with a role mixtune has no {@link Role} for (alpaca's
 * user_context) are left to interop's test_bundled_chat_templates.py, which renders every one with jinja2.
 */
class BundledChatTemplatesTest {
    private static final Path GOLDEN = Path.of("src/test/resources/chat_templates/bundled_chat_templates.json");

    @Test
    void mixtunesTextRendersAsMergekitsFile() throws IOException {
        JsonNode golden = new ObjectMapper().readTree(GOLDEN.toFile());
        int compared = 0;
        for (String name : MergedChatTemplate.MERGEKIT_BUNDLED) {
            JinjaChatTemplate template = new JinjaChatTemplate(name, MergedChatTemplate.bundled(name),
                    golden.get("bos_token").asText(), golden.get("eos_token").asText());
            JsonNode renderings = golden.get("renderings").get(name);
            for (int c = 0; c < golden.get("conversations").size(); c++) {
                List<Message> messages = messages(golden.get("conversations").get(c));
                if (messages == null) {
                    continue;
                }
                for (int prompt = 0; prompt < 2; prompt++) {
                    JsonNode expected = renderings.get(c).get(prompt);
                    boolean generationPrompt = prompt == 1;
                    String where = name + ", conversation " + c + ", add_generation_prompt " + generationPrompt;
                    if (expected.isNull()) {
                        assertThrows(JinjaChatTemplate.TemplateException.class,
                                () -> template.render(messages, generationPrompt), where);
                    } else {
                        assertEquals(expected.asText(), template.render(messages, generationPrompt).text(), where);
                    }
                    compared++;
                }
            }
        }
        assertEquals(5 * 6 * 2, compared, "every template on the six conversations of mixtune's roles");
    }

    /** The conversation's messages, or null where a role is not one of mixtune's. */
    private static List<Message> messages(JsonNode conversation) {
        List<Message> messages = new ArrayList<>();
        for (JsonNode message : conversation) {
            String role = message.get("role").asText();
            if (List.of(Role.values()).stream().noneMatch(r -> r.name().toLowerCase(Locale.ROOT).equals(role))) {
                return null;
            }
            messages.add(new Message(Role.valueOf(role.toUpperCase(Locale.ROOT)), message.get("content").asText()));
        }
        return messages;
    }
}
