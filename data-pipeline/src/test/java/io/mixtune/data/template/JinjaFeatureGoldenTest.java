package io.mixtune.data.template;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.data.chat.Conversation;
import io.mixtune.data.read.ChatFormat;
import java.io.IOException;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;

/**
 * Each Jinja feature of interop/make_jinja_feature_goldens.py renders as transformers 5.18's jinja2 renders it, or
 * fails naming the template's line where Jinjava lacks it, or differs as README says (none prints as nothing; an
 * attribute of an undefined value is undefined instead of an error).
 */
class JinjaFeatureGoldenTest {
    /** Jinjava cannot parse or run these: the render fails, naming the line. */
    static final Set<String> REFUSED = Set.of("loop.previtem", "loop.nextitem", "tojson nested dict literal",
            "step slice", "backslash newline in a string");
    /** Rendered otherwise, as README says: mixtune's text. */
    static final Map<String, String> DIFFERENT = Map.of("none printed", "[][]", "undefined attribute of undefined",
            "[]");

    @Test
    void everyFeatureRendersAsJinja2OrFailsNamingItsLine() throws IOException {
        List<JsonNode> features = HfTemplateGoldenTest.lines("jinja-features.jsonl");
        assertEquals(39, features.size());
        int same = 0;
        for (int i = 0; i < features.size(); i++) {
            JsonNode feature = features.get(i);
            String name = feature.get("name").asText();
            Conversation chat = ChatFormat.MESSAGES.conversation(feature.get("record"), "jinja-features.jsonl:"
                    + (i + 1));
            String source = feature.get("template").asText();
            if (REFUSED.contains(name)) {
                // loading refuses some (loop.previtem), rendering the rest
                JinjaChatTemplate.TemplateException e = assertThrows(JinjaChatTemplate.TemplateException.class,
                        () -> new JinjaChatTemplate("t.jinja", source, "<s>", "</s>").render(chat.messages(),
                                chat.tools(), false), name);
                assertTrue(e.getMessage().startsWith("t.jinja: line 1: "), name + ": " + e.getMessage());
                continue;
            }
            JinjaChatTemplate template = new JinjaChatTemplate("t.jinja", source, "<s>", "</s>");
            if (DIFFERENT.containsKey(name)) {
                assertEquals(DIFFERENT.get(name), template.render(chat.messages(), chat.tools(), false).text(), name);
            } else if (feature.has("error")) {
                JinjaChatTemplate.TemplateException e = assertThrows(JinjaChatTemplate.TemplateException.class,
                        () -> template.render(chat.messages(), chat.tools(), false), name);
                String raised = feature.get("error").asText().replaceFirst("^TemplateError: ", "");
                assertEquals("t.jinja: the chat template raised an exception: " + raised, e.getMessage(), name);
                same++;
            } else {
                assertEquals(feature.get("text").asText(), template.render(chat.messages(), chat.tools(), false)
                        .text(), name);
                same++;
            }
        }
        assertEquals(features.size() - REFUSED.size() - DIFFERENT.size(), same);
    }
}
