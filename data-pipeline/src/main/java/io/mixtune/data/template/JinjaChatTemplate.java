package io.mixtune.data.template;

import com.hubspot.jinjava.Jinjava;
import com.hubspot.jinjava.JinjavaConfig;
import com.hubspot.jinjava.LegacyOverrides;
import com.hubspot.jinjava.interpret.JinjavaInterpreter;
import com.hubspot.jinjava.interpret.Context;
import com.hubspot.jinjava.interpret.TemplateError;
import com.hubspot.jinjava.lib.filter.Filter;
import com.hubspot.jinjava.lib.fn.ELFunctionDefinition;
import com.hubspot.jinjava.lib.tag.Tag;
import com.hubspot.jinjava.tree.Node;
import com.hubspot.jinjava.tree.TagNode;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.chat.Message;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A Hugging Face chat template (the Jinja text of a {@code tokenizer_config.json}'s {@code chat_template}) rendered as
 * transformers' {@code apply_chat_template} renders it, by Jinjava: {@code trim_blocks} and {@code lstrip_blocks} on,
 * the globals {@code messages}, {@code add_generation_prompt}, {@code bos_token}, {@code eos_token} and
 * {@code raise_exception} (which fails the render with the template's own message), {@code tools} the
 * conversation's tool definitions (undefined without), {@code documents} undefined, {@code tojson} as Python's {@code json.dumps}, and transformers'
 * {@code {% generation %}...{% endgeneration %}} block, whose character spans are returned.
 *
 * <p>Where Jinjava reads Jinja differently, the template text is adjusted before parsing: {@code lstrip_blocks} is
 * applied to the text (Jinjava's strips the spaces before a tag even after other text on its line, {@code "}} {%"});
 * {@code not x is defined}
 * binds as {@code not (x is defined)} in Jinja but as {@code (not x) is defined} in Jinjava, so the test is
 * parenthesised; Python's {@code str.startswith}, {@code endswith}, {@code upper} and {@code lower} become the Java
 * methods of the same meaning. Other Python string methods ({@code split}, {@code title}...) fail with the template's
 * name and line. Message contents are never interpreted again (Jinjava's nested interpretation is off).
 */
public final class JinjaChatTemplate {
    /** Around the output of a generation block; noncharacters, which text does not hold. */
    private static final char GENERATION_START = '\uFDD4';
    private static final char GENERATION_END = '\uFDD5';
    private static final Pattern NOT_IS = Pattern.compile(
            "\\bnot\\s+([A-Za-z_][A-Za-z0-9_.]*(?:\\[[^\\]]*\\])*)\\s+is\\s+(not\\s+)?([A-Za-z_]+)");
    private static final Pattern LSTRIP_BLOCKS = Pattern.compile("(?m)^[ \\t]+(?=\\{[%#](?![+-]))");
    private static final Pattern PYTHON_METHODS = Pattern.compile("\\.(startswith|endswith|upper|lower)\\(");

    private final String name;
    private final String source;
    private final String bosToken;
    private final String eosToken;
    private final Jinjava jinjava;
    private final String jinjavaSource;
    private Node tree;
    private List<TemplateError> parseErrors = List.of();

    /**
     * @param name how errors name the template (the file it came from)
     * @param source the Jinja text
     */
    public JinjaChatTemplate(String name, String source, String bosToken, String eosToken) {
        this.name = name;
        this.source = source;
        this.bosToken = bosToken;
        this.eosToken = eosToken;
        this.jinjavaSource = adapt(source);
        // lstrip_blocks is done on the source (adapt): Jinjava's also strips spaces after text on the same line.
        JinjavaConfig config = JinjavaConfig.newBuilder().withTrimBlocks(true).withLstripBlocks(false)
                .withNestedInterpretationEnabled(false).withFailOnUnknownTokens(false)
                // Jinja's {{- and {#- strip the whitespace before them; Jinjava does so only with these overrides.
                .withLegacyOverrides(LegacyOverrides.newBuilder().withUseTrimmingForNotesAndExpressions(true)
                        .withParseWhitespaceControlStrictly(true).build())
                .build();
        jinjava = new Jinjava(config);
        jinjava.getGlobalContext().registerFunction(new ELFunctionDefinition("", "raise_exception",
                JinjaChatTemplate.class, "raiseException", String.class));
        jinjava.getGlobalContext().registerTag(new GenerationTag());
        jinjava.getGlobalContext().registerFilter(new PythonToJson());
    }

    public String name() {
        return name;
    }

    /**
     * The {@code chat_template} of a tokenizer_config.json, as transformers reads it: a string, or a list of
     * {@code {name, template}} of which the one named "default" is used; its {@code bos_token} and {@code eos_token}
     * (strings or added-token objects with a {@code content}), "<s>" and "</s>" where it names none.
     *
     * @param file how errors name the file
     * @return null when the file has no chat_template
     * @throws IllegalArgumentException naming the file when it is not JSON or the template is malformed
     */
    public static JinjaChatTemplate fromTokenizerConfig(String file, byte[] json) {
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(json);
        } catch (IOException e) {
            throw new IllegalArgumentException(file + ": not JSON: " + e.getMessage(), e);
        }
        JsonNode template = root.path("chat_template");
        String source;
        if (template.isMissingNode() || template.isNull()) {
            return null;
        } else if (template.isTextual()) {
            source = template.asText();
        } else if (template.isArray()) {
            source = null;
            List<String> names = new ArrayList<>();
            for (JsonNode named : template) {
                names.add(named.path("name").asText());
                if ("default".equals(named.path("name").asText())) {
                    source = named.path("template").asText(null);
                }
            }
            if (source == null) {
                throw new IllegalArgumentException(file + ": chat_template lists the templates " + names
                        + " but none named \"default\", which is the one a chat uses");
            }
        } else {
            throw new IllegalArgumentException(file + ": chat_template must be a string or a list of {name, template}, "
                    + "got " + template.getNodeType().name().toLowerCase(Locale.ROOT));
        }
        return new JinjaChatTemplate(file, source, token(root.path("bos_token"), "<s>"),
                token(root.path("eos_token"), "</s>"));
    }

    private static String token(JsonNode token, String otherwise) {
        if (token.isTextual()) {
            return token.asText();
        }
        return token.path("content").isTextual() ? token.path("content").asText() : otherwise;
    }


    /** The Jinja text as given. */
    public String source() {
        return source;
    }

    public String bosToken() {
        return bosToken;
    }

    public String eosToken() {
        return eosToken;
    }

    /** Whether the template marks what trains with {@code {% generation %}} blocks. */
    public boolean hasGenerationBlocks() {
        return Pattern.compile("\\{%-?\\s*generation\\s*-?%\\}").matcher(source).find();
    }

    /**
     * The rendered text, and the [start, end) character spans of its {@code {% generation %}} blocks.
     *
     * @throws TemplateException where the template raises (raise_exception) or Jinjava cannot render it
     */
    public Rendered render(List<Message> messages, boolean addGenerationPrompt) {
        return render(messages, null, addGenerationPrompt);
    }

    /**
     * As {@link #render(List, boolean)}, each message with its other keys ({@code tool_calls}...) beside role and
     * content, and {@code tools} defined where it is not null.
     */
    public Rendered render(List<Message> messages, List<Object> tools, boolean addGenerationPrompt) {
        List<Map<String, Object>> chat = new ArrayList<>(messages.size());
        for (Message message : messages) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("role", message.role().name().toLowerCase(Locale.ROOT));
            m.put("content", message.content());
            message.fields().forEach(m::putIfAbsent);
            chat.add(m);
        }
        Map<String, Object> globals = new HashMap<>();
        globals.put("messages", chat);
        if (tools != null) {
            globals.put("tools", tools);
        }
        globals.put("add_generation_prompt", addGenerationPrompt);
        globals.put("bos_token", bosToken);
        globals.put("eos_token", eosToken);
        // The template is parsed once; each render gets its own interpreter and context, as renderForResult does.
        JinjavaInterpreter interpreter = new JinjavaInterpreter(jinjava, new Context(jinjava.getGlobalContext(),
                globals), jinjava.getGlobalConfig());
        String output;
        JinjavaInterpreter.pushCurrent(interpreter);
        try {
            output = interpreter.render(tree());
        } finally {
            JinjavaInterpreter.popCurrent();
        }
        List<TemplateError> errors = new ArrayList<>(parseErrors);
        errors.addAll(interpreter.getErrors());
        for (TemplateError error : errors) {
            if (error.getSeverity() != TemplateError.ErrorType.FATAL) {
                continue;
            }
            for (Throwable cause = error.getException(); cause != null; cause = cause.getCause()) {
                if (cause instanceof Raised raised) {
                    throw new TemplateException(name + ": the chat template raised an exception: "
                            + raised.getMessage());
                }
            }
            throw new TemplateException(name + ": line " + error.getLineno() + ": the chat template cannot be "
                    + "rendered by Jinjava: " + error.getMessage());
        }
        String marked = output;
        StringBuilder text = new StringBuilder(marked.length());
        List<int[]> spans = new ArrayList<>();
        int start = -1;
        for (int i = 0; i < marked.length(); i++) {
            char c = marked.charAt(i);
            if (c == GENERATION_START) {
                start = text.length();
            } else if (c == GENERATION_END) {
                spans.add(new int[] {start, text.length()});
            } else {
                text.append(c);
            }
        }
        return new Rendered(text.toString(), spans);
    }

    /** The parsed template, shared by every render (its syntax errors stay with each render's interpreter). */
    private Node tree() {
        if (tree == null) {
            JinjavaInterpreter parser = jinjava.newInterpreter();
            tree = parser.parse(jinjavaSource);
            parseErrors = List.copyOf(parser.getErrors());
        }
        return tree;
    }

    /** @param generationSpans [start, end) of each {@code {% generation %}} block's output, in order */
    public record Rendered(String text, List<int[]> generationSpans) {}

    /** A template that raised, or that Jinjava cannot render. */
    public static final class TemplateException extends IllegalArgumentException {
        public TemplateException(String message) {
            super(message);
        }
    }

    private static final class Raised extends RuntimeException {
        Raised(String message) {
            super(message);
        }
    }

    /** {@code raise_exception(message)}, as transformers gives templates. */
    public static String raiseException(String message) {
        throw new Raised(message);
    }

    static String adapt(String source) {
        // Jinja's lstrip_blocks: spaces and tabs from the start of a line up to a block or comment tag.
        source = LSTRIP_BLOCKS.matcher(source).replaceAll("");
        Matcher notIs = NOT_IS.matcher(source);
        String adapted = notIs.replaceAll(m -> Matcher.quoteReplacement("not (" + m.group(1) + " is "
                + (m.group(2) == null ? "" : m.group(2)) + m.group(3) + ")"));
        return PYTHON_METHODS.matcher(adapted).replaceAll(m -> switch (m.group(1)) {
            case "startswith" -> ".startsWith(";
            case "endswith" -> ".endsWith(";
            case "upper" -> ".toUpperCase(";
            default -> ".toLowerCase(";
        });
    }

    /** transformers' {@code {% generation %}}: its output marked, so that {@link #render} can return its span. */
    private static final class GenerationTag implements Tag {
        @Override
        public String getName() {
            return "generation";
        }

        @Override
        public String getEndTagName() {
            return "endgeneration";
        }

        @Override
        public String interpret(TagNode tagNode, JinjavaInterpreter interpreter) {
            StringBuilder body = new StringBuilder().append(GENERATION_START);
            for (Node child : tagNode.getChildren()) {
                body.append(child.render(interpreter).getValue());
            }
            return body.append(GENERATION_END).toString();
        }
    }

    /** {@code tojson} as transformers defines it: Python's {@code json.dumps(x, ensure_ascii=False)}. */
    private static final class PythonToJson implements Filter {
        @Override
        public String getName() {
            return "tojson";
        }

        @Override
        public Object filter(Object var, JinjavaInterpreter interpreter, String... args) {
            StringBuilder out = new StringBuilder();
            write(var, out);
            return out.toString();
        }

        private static void write(Object value, StringBuilder out) {
            if (value == null) {
                out.append("null");
            } else if (value instanceof Map<?, ?> map) {
                out.append('{');
                String separator = "";
                for (Map.Entry<?, ?> entry : map.entrySet()) {
                    out.append(separator);
                    write(String.valueOf(entry.getKey()), out);
                    out.append(": ");
                    write(entry.getValue(), out);
                    separator = ", ";
                }
                out.append('}');
            } else if (value instanceof Iterable<?> list) {
                out.append('[');
                String separator = "";
                for (Object item : list) {
                    out.append(separator);
                    write(item, out);
                    separator = ", ";
                }
                out.append(']');
            } else if (value instanceof Boolean || value instanceof Number) {
                out.append(value);
            } else {
                String s = value.toString();
                out.append('"');
                for (int i = 0; i < s.length(); i++) {
                    char c = s.charAt(i);
                    switch (c) {
                        case '"' -> out.append("\\\"");
                        case '\\' -> out.append("\\\\");
                        case '\n' -> out.append("\\n");
                        case '\r' -> out.append("\\r");
                        case '\t' -> out.append("\\t");
                        case '\b' -> out.append("\\b");
                        case '\f' -> out.append("\\f");
                        default -> {
                            if (c < 0x20) {
                                out.append(String.format("\\u%04x", (int) c));
                            } else {
                                out.append(c);
                            }
                        }
                    }
                }
                out.append('"');
            }
        }
    }
}
