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
        // transformers passes tools=None and documents=None: defined, and none
        assertEquals("defined|defined|none|defined", render("{% if not add_generation_prompt is defined %}undefined"
                + "{% else %}defined{% endif %}|{% if not tools is defined %}undefined{% else %}defined{% endif %}"
                + "|{% if tools is none %}none{% endif %}|{% if documents is not defined %}undefined{% else %}defined"
                + "{% endif %}", CHAT, false));
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

    static String render(String source, List<Message> messages, List<Object> tools) {
        return new JinjaChatTemplate("t.jinja", source, "<s>", "</s>").render(messages, tools, false).text();
    }

    /** Expected texts: transformers 5.18's render_jinja_template (jinja2 3.1.6) of the same template and chat. */
    @Test
    void pythonBehaviourReachedThroughJinja2RendersAsThere() throws Exception {
        List<Object> tools = new com.fasterxml.jackson.databind.ObjectMapper().readValue("[{\"type\": \"function\", "
                + "\"function\": {\"name\": \"f\", \"description\": \"\u00e9 \\\"q\\\"\", \"parameters\": {\"type\": "
                + "\"object\", \"properties\": {\"z\": {\"type\": \"string\"}, \"a\": {\"type\": \"integer\", "
                + "\"minimum\": 0.5}}, \"required\": [\"z\"]}}}]", List.class);
        // Llama 3.x writes its tools with tojson(indent=4); Jinjava's tojson took no arguments
        assertEquals("{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"f\",\n        "
                + "\"description\": \"\u00e9 \\\"q\\\"\",\n        \"parameters\": {\n            \"type\": \"object\",\n  "
                + "          \"properties\": {\n                \"z\": {\n                    \"type\": \"string\"\n   "
                + "             },\n                \"a\": {\n                    \"type\": \"integer\",\n            "
                + "        \"minimum\": 0.5\n                }\n            },\n            \"required\": [\n        "
                + "        \"z\"\n            ]\n        }\n    }\n}",
                render("{% for t in tools %}{{ t | tojson(indent=4) }}{% endfor %}", CHAT, tools));
        assertEquals("{\"properties\":{\"a\":{\"minimum\":0.5,\"type\":\"integer\"},\"z\":{\"type\":\"string\"}},"
                + "\"required\":[\"z\"],\"type\":\"object\"}|\"\\u00e9 \\\"q\\\"\"|[\n  \"z\"\n]|[]",
                render("{{ tools[0].function.parameters | tojson(separators=(',', ':'), sort_keys=true) }}|"
                        + "{{ tools[0].function.description | tojson(ensure_ascii=true) }}|"
                        + "{{ tools[0].function.parameters.required | tojson(indent=2) }}|{{ [] | tojson(indent=2) }}",
                        CHAT, tools));
        // trim is Python's str.strip(): an ideographic space, a no-break space and U+2007 are whitespace there
        assertEquals("[a][a][Be brief.  ][  Be brief.]", render("[{{ ' \u3000a\u00a0\u2007' | trim }}]"
                + "[{{ '--a-' | trim('-') }}][{{ messages[0].content.lstrip() }}][{{ messages[0].content.rstrip() }}]",
                CHAT, false));
        // Python's str methods and indexing (DeepSeek-R1's and Qwen3's content.split('</think>')[-1]): Java's split
        // took a regex and dropped trailing empty parts, s[0] was nothing
        assertEquals("[a][][a|b][4][a|b c][ac][a][Hello World][2][ayaX][3][x]", render("[{{ 'a.b'.split('.')[0] }}]"
                + "[{{ 'x</think>'.split('</think>')[-1] }}][{{ ' a  b '.split()|join('|') }}]"
                + "[{{ 'a,b,,'.split(',')|length }}][{{ 'a b c'.split(' ', 1)|join('|') }}][{{ 'abc'[0] }}{{ 'abc'[-1] }}]"
                + "[{{ 'a\\n\\n'.rstrip('\\n') }}][{{ 'hello world'.title() }}][{{ 'abc'.find('c') }}]"
                + "[{{ 'aXaX'.replace('X', 'y', 1) }}][{{ 'aaa'.count('a') }}][{{ ' x '.strip() }}]", CHAT, false));
        // booleans print as Python's str() prints them; a string is iterable
        assertEquals("TrueFalse FalseFalse FalseTrue True True True", render("{% for m in messages %}{{ loop.first }}"
                + "{{ loop.last }} {% endfor %}{{ messages[0].content is string }} {{ 'x' is iterable }} {{ 1 == 1 }}",
                CHAT, false));
        // `not a == b` is `not (a == b)` in jinja2 (Llama 3.1: `not message.tool_calls|length == 1`)
        assertEquals("many not-user no-z keep not a == b", render("{% if not messages|length == 1 %}many{% endif %}"
                + "{% if not messages[0].role == 'user' %} not-user{% endif %}"
                + "{% if not 'z' in messages[1].content %} no-z{% endif %} keep not a == b", CHAT, false));
        // strftime_now is defined and writes the local date (Llama 3.2's system header)
        String rendered = render("{% if strftime_now is defined %}{{ strftime_now('%d %b %Y') }}{% endif %}", CHAT,
                false);
        java.time.format.DateTimeFormatter python = java.time.format.DateTimeFormatter.ofPattern("dd MMM yyyy",
                java.util.Locale.ENGLISH);
        java.time.LocalDate today = java.time.LocalDate.now();
        assertTrue(rendered.equals(today.format(python)) || rendered.equals(today.minusDays(1).format(python)),
                rendered);
    }

    /** jinja2's `for ... if` keeps the items that meet the condition, and loop.* counts them; Jinjava took them all. */
    @Test
    void aLoopFilterKeepsTheItemsThatMeetIt() throws Exception {
        List<Object> tools = new com.fasterxml.jackson.databind.ObjectMapper().readValue("[{\"type\": \"function\", "
                + "\"function\": {\"name\": \"f\", \"description\": \"d\", \"parameters\": {\"type\": \"object\"}, "
                + "\"return\": {\"type\": \"string\"}}}]", List.class);
        assertEquals("name,description,parameters|1user2assistant", render("{% for k, v in tools[0].function.items() "
                + "if k != 'return' %}{{ k }}{% if not loop.last %},{% endif %}{% endfor %}|{% for m in messages if "
                + "m.role != 'system' -%} {{ loop.index }}{{ m.role }}{% endfor %}", CHAT, tools));
        // Mistral v0.3 leaves a tool's "return" (transformers' get_json_schema writes one) out of [AVAILABLE_TOOLS]
        String v3 = HfTemplateGoldenTest.text("configs/chat-templates/mistral-7b-instruct-v0.3.jinja");
        assertEquals("<s>[AVAILABLE_TOOLS] [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": "
                + "\"d\", \"parameters\": {\"type\": \"object\"}}}][/AVAILABLE_TOOLS][INST] Weather?[/INST] Sunny.</s>",
                render(v3, List.of(new Message(Role.USER, "Weather?"), new Message(Role.ASSISTANT, "Sunny.")), tools));
    }

    /** A float prints as Python's str() writes it, where Jinjava wrote Java's 1.0E7. */
    @Test
    void floatsPrintAsInPython() {
        // jinja2 3.1.6: '10000000.0|0.0001|1.5|1.5|[0.0001]'
        assertEquals("10000000.0|0.0001|1.5|1.5|[0.0001]", render("{{ 10000000.0 }}|{{ 0.0001 }}|{{ 1.5 }}|{{ 3 / 2 }}|"
                + "{{ [0.0001] }}", CHAT, false));
    }

    /** A loop filter's condition reads as jinja2 reads it: `not a == b` is `not (a == b)`; `tools` is defined. */
    @Test
    void aLoopFiltersConditionBindsAsInJinja2() {
        // jinja2 3.1.6, tools=None as transformers passes it: '1user 2assistant |sua|'
        assertEquals("1user 2assistant |sua|", render("{% for m in messages if not m.role == 'system' %}"
                + "{{ loop.index }}{{ m.role }} {% endfor %}|{% for m in messages if tools is defined %}"
                + "{{ m.role[0] }}{% endfor %}|{% for m in messages if tools is not defined %}x{% endfor %}", CHAT,
                false));
    }

    /** Reported when the template is loaded, before any conversation renders. */
    @Test
    void loopVariablesJinjavaLacksFailNamingTheLine() {
        JinjaChatTemplate.TemplateException e = assertThrows(JinjaChatTemplate.TemplateException.class,
                () -> new JinjaChatTemplate("t.jinja", "{% for m in messages %}\n{% if loop.previtem is defined %}"
                        + "{{ loop.previtem.role }}{% endif %}{% endfor %}", "<s>", "</s>"));
        assertEquals("t.jinja: line 2: the chat template uses loop.previtem, which Jinjava's for loop lacks (it "
                + "would render as undefined); rewrite it with messages[loop.index0 - 1] or messages[loop.index0 + 1]",
                e.getMessage());
    }

    @Test
    void raiseExceptionFailsWithTheTemplatesMessage() {
        JinjaChatTemplate.TemplateException e = assertThrows(JinjaChatTemplate.TemplateException.class,
                () -> render("{{ raise_exception('Only user and assistant roles are supported!') }}", CHAT, false));
        assertEquals("t.jinja: the chat template raised an exception: Only user and assistant roles are supported!",
                e.getMessage());
        JinjaChatTemplate.TemplateException unknown = assertThrows(JinjaChatTemplate.TemplateException.class,
                () -> render("{{ messages[0].content.zfill(3) }}", CHAT, false));
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
