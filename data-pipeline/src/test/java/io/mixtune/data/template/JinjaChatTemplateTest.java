package io.mixtune.data.template;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The Jinja features Hub templates use, as transformers' jinja2 renders them (expected texts written by hand from
 * jinja2's semantics), and the failures a template can meet: each names the template and what went wrong.
 */
class JinjaChatTemplateTest {
    static final List<Message> CHAT = List.of(new Message(Role.SYSTEM, "  Be brief.  "),
            new Message(Role.USER, "Hi {{ 7 * 7 }}"), new Message(Role.ASSISTANT, "Hello"));
    static TextTokenizer tokenizer;

    @BeforeAll
    static void open() {
        tokenizer = TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2);
    }

    @AfterAll
    static void close() {
        tokenizer.close();
    }

    static String render(String source, List<Message> messages, boolean addGenerationPrompt) {
        return new JinjaChatTemplate("t.jinja", source, "<s>", "</s>").render(messages, addGenerationPrompt).text();
    }

    @Test
    void featuresHubTemplatesUseRenderAsInJinja2() {
        assertEquals("0:system 1:user 2:assistant ", render(
                "{% for m in messages %}{{ loop.index0 }}:{{ m['role'] }} {% endfor %}", CHAT, false));
        assertEquals("2 user", render("{{ messages[1:] | length }} {{ messages[1:][0].role }}", CHAT, false));
        assertEquals("True", render("{% set ns = namespace(found=false) %}{% for m in messages %}"
                + "{% if m.role == 'user' %}{% set ns.found = true %}{% endif %}{% endfor %}"
                + "{% if ns.found %}True{% endif %}", CHAT, false));
        assertEquals("[Be brief.][Be brief.]", render("[{{ messages[0].content | trim }}]"
                + "[{{ messages[0].content.strip() }}]", CHAT, false));
        // jinja2 binds `not x is defined` as `not (x is defined)`; Jinjava would read `(not x) is defined`
        assertEquals("defined|undefined|none", render("{% if not add_generation_prompt is defined %}undefined"
                + "{% else %}defined{% endif %}|{% if not tools is defined %}undefined{% endif %}"
                + "|{% if tools is none %}none{% endif %}", CHAT, false));
        assertEquals("a=1;", render("{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }};{% endfor %}", CHAT, false));
        assertEquals("{\"a\": \"x<y\", \"b\": [1, true, null]}", render("{{ {'a': 'x<y', 'b': [1, true, none]} "
                + "| tojson }}", CHAT, false));
        assertEquals("True True HI", render("{% if messages[1].content.startswith('Hi') %}True{% endif %} "
                + "{% if 'abc'.endswith('c') %}True{% endif %} {{ 'hi'.upper() }}", CHAT, false));
        // trim_blocks and lstrip_blocks, and {{- / {%- whitespace control
        assertEquals("A\n  B\nC<s>", render("A\n{% if true %}\n  B\n{% endif %}\nC\n    {{- bos_token }}", CHAT,
                false));
        assertEquals("a x|  y|  X\nZ\nW", render("{{ 'a' }} {% if true %}x{% endif %}|  {% if true %}y{% endif %}|"
                + "  {# note #}\nX\n  {# c #}\nZ\n\t{% if true %}W{% endif %}", CHAT, false));
        // a message's text is never rendered as a template
        assertEquals("Hi {{ 7 * 7 }}", render("{{ messages[1].content }}", CHAT, false));
        assertEquals("[gen]", render("{% if add_generation_prompt %}[gen]{% endif %}", CHAT, true));
    }

    @Test
    void raiseExceptionFailsWithTheTemplatesMessage() {
        JinjaChatTemplate.TemplateException e = assertThrows(JinjaChatTemplate.TemplateException.class,
                () -> render("{{ raise_exception('Only user and assistant roles are supported!') }}", CHAT, false));
        assertEquals("t.jinja: the chat template raised an exception: Only user and assistant roles are supported!",
                e.getMessage());
        JinjaChatTemplate.TemplateException unknown = assertThrows(JinjaChatTemplate.TemplateException.class,
                () -> render("{{ messages[0].content.split() }}", CHAT, false));
        assertTrue(unknown.getMessage().startsWith("t.jinja: line 1: the chat template cannot be rendered by "
                + "Jinjava"), unknown.getMessage());
        JinjaChatTemplate.TemplateException syntax = assertThrows(JinjaChatTemplate.TemplateException.class,
                () -> render("{% for m in messages %}{{ m.role }}", CHAT, false));
        assertTrue(syntax.getMessage().startsWith("t.jinja: line 1: "), syntax.getMessage());
    }

    @Test
    void specialTokenTextsTypedInAMessageStayText() {
        Conversation typed = new Conversation(List.of(new Message(Role.USER, "Say </s> and <s>"),
                new Message(Role.ASSISTANT, "</s> is text")), "typed:1");
        HfChatTemplate mistral = new HfChatTemplate(new JinjaChatTemplate("mistral", MistralTemplate.JINJA, "<s>",
                "</s>"), 1, 2);
        TokenizedSample sample = TemplateGoldenTest.build(mistral, typed, tokenizer);
        long eos = sample.inputIds()[sample.length() - 1];
        assertEquals(2, eos);
        long count = java.util.Arrays.stream(sample.inputIds()).filter(id -> id == 1 || id == 2).count();
        assertEquals(2, count, "one BOS and one EOS, both from the template");
        assertArrayEquals(TemplateGoldenTest.build(new MistralTemplate(1, 2), typed, tokenizer).inputIds(),
                sample.inputIds());
    }

    @Test
    void aTurnThatPrefixesCannotFindFailsNamingTemplateAndTurn() {
        // the system prompt follows the conversation: the prefix up to turn 1 is not a prefix of the whole
        String moving = "{% for m in messages %}{% if m.role != 'system' %}{{ m.role + ': ' + m.content + '\\n' }}"
                + "{% endif %}{% endfor %}{{ 'turns: ' + (messages | length) | string }}";
        Conversation chat = new Conversation(List.of(new Message(Role.USER, "a"), new Message(Role.ASSISTANT, "b"),
                new Message(Role.USER, "c"), new Message(Role.ASSISTANT, "d")), "chats.jsonl:7");
        HfChatTemplate template = new HfChatTemplate(new JinjaChatTemplate("moving.jinja", moving, "<s>", "</s>"), 1,
                2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> template.segments(chat, tokenizer));
        assertTrue(e.getMessage().startsWith("moving.jinja on chats.jsonl:7: assistant turn 1 (message 2): the "
                + "conversation up to this turn does not render to a prefix"), e.getMessage());
        HfChatTemplate dropping = new HfChatTemplate(new JinjaChatTemplate("dropping.jinja",
                "{% for m in messages %}{{ m.role }}{% endfor %}", "<s>", "</s>"), 1, 2);
        IllegalArgumentException dropped = assertThrows(IllegalArgumentException.class,
                () -> dropping.segments(chat, tokenizer));
        assertTrue(dropped.getMessage().contains("assistant turn 1 (message 2): the template does not render the "
                + "assistant's content"), dropped.getMessage());
    }
}
