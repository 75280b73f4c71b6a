package io.mixtune.data.template;

import com.hubspot.jinjava.Jinjava;
import com.hubspot.jinjava.JinjavaConfig;
import com.hubspot.jinjava.LegacyOverrides;
import com.hubspot.jinjava.interpret.JinjavaInterpreter;
import com.hubspot.jinjava.interpret.Context;
import com.hubspot.jinjava.interpret.TemplateError;
import com.hubspot.jinjava.lib.expression.ExpressionStrategy;
import com.hubspot.jinjava.lib.exptest.IsIterableExpTest;
import com.hubspot.jinjava.lib.filter.Filter;
import com.hubspot.jinjava.lib.fn.ELFunctionDefinition;
import com.hubspot.jinjava.lib.tag.Tag;
import com.hubspot.jinjava.tree.Node;
import com.hubspot.jinjava.tree.TagNode;
import com.hubspot.jinjava.tree.output.RenderedOutputNode;
import com.hubspot.jinjava.tree.parse.ExpressionToken;
import com.hubspot.jinjava.util.ObjectTruthValue;
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
 * the globals {@code messages}, {@code add_generation_prompt}, {@code bos_token} (undefined where the tokenizer has
 * none, as transformers leaves it out), {@code eos_token} and
 * {@code raise_exception} (which fails the render with the template's own message), {@code strftime_now}, {@code tools}
 * the conversation's tool definitions (none without, but defined, as transformers passes {@code tools=None}),
 * {@code documents} none, {@code tojson} as Python's {@code json.dumps} with its options, {@code trim} as
 * {@code str.strip}, and transformers' {@code {% generation %}...{% endgeneration %}} block, whose character spans are
 * returned.
 *
 * <p>Where Jinjava reads Jinja differently, the template text is adjusted before parsing: {@code lstrip_blocks} is
 * applied to the text (Jinjava's strips the spaces before a tag even after other text on its line, {@code "}} {%"});
 * {@code not x is defined} and {@code not a == b} bind as {@code not (x is defined)} in Jinja but as
 * {@code (not x) is defined} in Jinjava, so the test or comparison is parenthesised. Python's {@code str} methods that
 * templates call ({@code split}, {@code strip}, {@code startswith}...) and string indexing are answered as Python does
 * ({@link PythonStringMethods}); other methods and {@code loop.previtem} fail with the template's name and line.
 * Message contents are never interpreted again (Jinjava's nested interpretation is off).
 */
public final class JinjaChatTemplate {
    /** Around the output of a generation block; noncharacters, which text does not hold. */
    private static final char GENERATION_START = '\uFDD4';
    private static final char GENERATION_END = '\uFDD5';
    /** A name with attributes and subscripts: {@code messages[0].role}. */
    private static final String OPERAND = "[A-Za-z_][A-Za-z0-9_]*(?:\\.[A-Za-z_][A-Za-z0-9_]*|\\[[^\\]]*\\])*";
    private static final Pattern NOT_IS = Pattern.compile(
            "\\bnot\\s+(" + OPERAND + ")\\s+is\\s+(not\\s+)?([A-Za-z_]+)");
    /** {@code not a == b}: a comparison (or {@code in}) under {@code not}, its left side with any filters. */
    private static final String LITERAL = "'[^']*'|\"[^\"]*\"|-?[0-9]+(?:\\.[0-9]+)?";
    private static final Pattern NOT_COMPARE = Pattern.compile("\\bnot\\s+((?:" + LITERAL + "|" + OPERAND
            + ")(?:\\s*\\|\\s*[A-Za-z_]+)*)\\s*(==|!=|<=|>=|<|>|\\bin\\b)\\s*(" + LITERAL + "|" + OPERAND + ")");
    /**
     * {@code {% for a, b in seq if condition %}}: jinja2 iterates the items that meet the condition (and {@code loop}
     * counts those); Jinjava ignores the condition. Rewritten to {@code seq|loop_if(n)}, {@link LoopIf} keeping them.
     */
    private static final Pattern LOOP_FILTER = Pattern.compile("\\{%(-?)(\\s*for\\s+)([A-Za-z_][A-Za-z0-9_]*"
            + "(?:\\s*,\\s*[A-Za-z_][A-Za-z0-9_]*)*)(\\s+in\\s+)((?:(?!%\\}).)+?)\\s+if\\s+((?:(?!%\\}).)+?)\\s*(-?)%\\}",
            Pattern.DOTALL);
    private static final Pattern ALWAYS_DEFINED = Pattern.compile(
            "(?<![A-Za-z0-9_.])(tools|documents)\\s+is\\s+(not\\s+)?defined\\b");
    /** A {@code {{ }}} or {@code {% %}} tag, whose expression {@link #adapt} rewrites. */
    private static final Pattern TAGS = Pattern.compile("\\{\\{.*?\\}\\}|\\{%.*?%\\}", Pattern.DOTALL);
    private static final Pattern LSTRIP_BLOCKS = Pattern.compile("(?m)^[ \\t]+(?=\\{[%#](?![+-]))");
    /** jinja2's loop variables that Jinjava's loop lacks (it would render them as undefined, silently). */
    private static final Pattern UNSUPPORTED_LOOP = Pattern.compile("\\bloop\\.(previtem|nextitem|changed)\\b");

    /** transformers' CHAT_TEMPLATE_FILE: where its save_pretrained writes a tokenizer's chat template. */
    public static final String TEMPLATE_FILE = "chat_template.jinja";

    /** transformers' CHAT_TEMPLATE_DIR: a tokenizer's named templates, NAME.jinja each, beside its tokenizer.json. */
    public static final String TEMPLATE_DIR = "additional_chat_templates";

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
     * @throws TemplateException naming the line where the template uses a loop variable Jinjava lacks
     *     ({@code loop.previtem}, {@code loop.nextitem}, {@code loop.changed})
     */
    public JinjaChatTemplate(String name, String source, String bosToken, String eosToken) {
        this.name = name;
        this.source = source;
        this.bosToken = bosToken;
        this.eosToken = eosToken;
        // once, where the template is loaded: HfChatTemplate renders each conversation several times
        Matcher unsupported = UNSUPPORTED_LOOP.matcher(source);
        if (unsupported.find()) {
            throw new TemplateException(name + ": line " + lineOf(source, unsupported.start()) + ": the chat template "
                    + "uses loop." + unsupported.group(1) + ", which Jinjava's for loop lacks (it would render as "
                    + "undefined); rewrite it with messages[loop.index0 - 1] or messages[loop.index0 + 1]");
        }
        List<LoopIf.Condition> loopConditions = new ArrayList<>();
        this.jinjavaSource = adapt(source, loopConditions);
        // lstrip_blocks is done on the source (adapt): Jinjava's also strips spaces after text on the same line.
        JinjavaConfig config = JinjavaConfig.newBuilder().withTrimBlocks(true).withLstripBlocks(false)
                .withElResolver(new PythonStringMethods())
                .withNestedInterpretationEnabled(false).withFailOnUnknownTokens(false)
                // Jinja's {{- and {#- strip the whitespace before them; Jinjava does so only with these overrides.
                .withLegacyOverrides(LegacyOverrides.newBuilder().withUseTrimmingForNotesAndExpressions(true)
                        .withParseWhitespaceControlStrictly(true).build())
                .build();
        jinjava = new Jinjava(config);
        jinjava.getGlobalContext().registerFunction(new ELFunctionDefinition("", "raise_exception",
                JinjaChatTemplate.class, "raiseException", String.class));
        jinjava.getGlobalContext().registerTag(new GenerationTag());
        jinjava.getGlobalContext().registerFunction(new ELFunctionDefinition("", "strftime_now",
                JinjaChatTemplate.class, "strftimeNow", String.class));
        jinjava.getGlobalContext().registerFilter(new PythonToJson());
        jinjava.getGlobalContext().registerFilter(new PythonTrim());
        jinjava.getGlobalContext().registerFilter(new LoopIf(loopConditions));
        jinjava.getGlobalContext().registerExpTest(new PythonIterable());
    }

    public String name() {
        return name;
    }

    /**
     * The {@code chat_template} of a tokenizer_config.json, as transformers reads it: a string, or a list of
     * {@code {name, template}} of which the one named "default" is used; its {@code bos_token} and {@code eos_token}
     * (strings or added-token objects with a {@code content}), "<s>" and "</s>" where it names none. A bos_token set
     * to null is none: transformers 5.18 then passes the template no bos_token, which renders nothing.
     *
     * @param file how errors name the file
     * @return null when the file has no chat_template
     * @throws IllegalArgumentException naming the file when it is not JSON, the template is malformed or uses a loop
     *     variable Jinjava lacks
     */
    public static JinjaChatTemplate fromTokenizerConfig(String file, byte[] json) {
        return fromTokenizerFiles(file, json, null, null);
    }

    /**
     * A tokenizer folder's template as transformers 5.18's AutoTokenizer loads it: its {@value #TEMPLATE_FILE}
     * (where save_pretrained writes a template, leaving none in tokenizer_config.json) before tokenizer_config.json's
     * {@code chat_template} (tokenization_utils_base: the independent template file takes priority), with the
     * tokenizer_config.json's BOS and EOS tokens as {@link #fromTokenizerConfig} reads them.
     *
     * @param config the tokenizer_config.json's bytes, or null where there is none
     * @param template the {@value #TEMPLATE_FILE}'s text, or null where there is none
     * @return null when neither holds a template
     */
    public static JinjaChatTemplate fromTokenizerFiles(String configFile, byte[] config, String templateFile,
            String template) {
        JsonNode root = root(configFile, config);
        if (template != null) {
            return new JinjaChatTemplate(templateFile, template, bosToken(root), token(root.path("eos_token"), "</s>"));
        }
        return fromConfigKey(configFile, root);
    }

    /**
     * A tokenizer folder's named templates, as transformers 5.18 builds its chat_template dict that
     * apply_chat_template(chat_template=NAME) picks from (tokenization_utils_base: from_pretrained, get_chat_template):
     * where the folder has template files, {@value #TEMPLATE_FILE} as "default" and each {@value #TEMPLATE_DIR}/NAME.jinja
     * as NAME, and tokenizer_config.json's chat_template is not read (the files "take priority"); else the names of
     * tokenizer_config.json's list of {name, template}. Empty where the tokenizer has one template or none.
     *
     * @param additional each {@value #TEMPLATE_DIR}/NAME.jinja's text by NAME
     * @param additionalFile how errors name NAME's file
     */
    public static Map<String, JinjaChatTemplate> namedTemplates(String configFile, byte[] config, String templateFile,
            String template, Map<String, String> additional, java.util.function.UnaryOperator<String> additionalFile) {
        JsonNode root = root(configFile, config);
        Map<String, JinjaChatTemplate> named = new java.util.TreeMap<>();
        if (template != null || !additional.isEmpty()) {
            if (additional.isEmpty()) {
                return named; // chat_template.jinja alone: one template, transformers' string
            }
            if (template != null) {
                named.put("default", new JinjaChatTemplate(templateFile, template, bosToken(root),
                        token(root.path("eos_token"), "</s>")));
            }
            additional.forEach((name, text) -> named.put(name, new JinjaChatTemplate(additionalFile.apply(name), text,
                    bosToken(root), token(root.path("eos_token"), "</s>"))));
        } else if (root.path("chat_template").isArray()) {
            for (JsonNode entry : root.path("chat_template")) {
                named.put(entry.path("name").asText(), new JinjaChatTemplate(configFile + " (" + entry.path("name")
                        .asText() + ")", entry.path("template").asText(), bosToken(root),
                        token(root.path("eos_token"), "</s>")));
            }
        }
        return named;
    }

    private static JsonNode root(String configFile, byte[] config) {
        try {
            return config == null ? new ObjectMapper().createObjectNode() : new ObjectMapper().readTree(config);
        } catch (IOException e) {
            throw new IllegalArgumentException(configFile + ": not JSON: " + e.getMessage(), e);
        }
    }

    private static String bosToken(JsonNode root) {
        return root.path("bos_token").isNull() ? null : token(root.path("bos_token"), "<s>");
    }

    private static JinjaChatTemplate fromConfigKey(String file, JsonNode root) {
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
        return new JinjaChatTemplate(file, source, bosToken(root), token(root.path("eos_token"), "</s>"));
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

    /** The template's bos_token, or null where the tokenizer has none (the template sees it undefined). */
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
        if (bosToken != null) {
            globals.put("bos_token", bosToken);
        }
        globals.put("eos_token", eosToken);
        // defined, as transformers' global is (Llama 3.2 asks `strftime_now is defined` before calling it)
        globals.put("strftime_now", "strftime_now");
        // The template is parsed once; each render gets its own interpreter and context, as renderForResult does.
        Context context = new Context(jinjava.getGlobalContext(), globals);
        JinjavaInterpreter interpreter = new JinjavaInterpreter(jinjava, context, jinjava.getGlobalConfig());
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
            // the parser hands its context's strategy to each {{ }} node
            parser.getContext().setExpressionStrategy(new PythonOutput());
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

    private static int lineOf(String text, int index) {
        int line = 1;
        for (int i = 0; i < index; i++) {
            if (text.charAt(i) == '\n') {
                line++;
            }
        }
        return line;
    }

    /**
     * transformers' {@code strftime_now(format)}: {@code datetime.now().strftime(format)}, the local date and time
     * (Llama 3.2 writes today's date into its system header with it).
     */
    public static String strftimeNow(String format) {
        return PythonBuiltins.strftime(java.time.LocalDateTime.now(), format);
    }

    /** {@code raise_exception(message)}, as transformers gives templates. */
    public static String raiseException(String message) {
        throw new Raised(message);
    }

    static String adapt(String source, List<LoopIf.Condition> loopConditions) {
        // Jinja's lstrip_blocks: spaces and tabs from the start of a line up to a block or comment tag.
        source = LSTRIP_BLOCKS.matcher(source).replaceAll("");
        source = LOOP_FILTER.matcher(source).replaceAll(m -> {
            // the condition leaves the tag here, before the rewrites below: it gets them itself
            loopConditions.add(new LoopIf.Condition(List.of(m.group(3).split("\\s*,\\s*")),
                    adaptExpression(m.group(6))));
            return Matcher.quoteReplacement("{%" + m.group(1) + m.group(2) + m.group(3) + m.group(4) + "(" + m.group(5)
                    + ")|" + LoopIf.NAME + "(" + (loopConditions.size() - 1) + ") " + m.group(7) + "%}");
        });
        // The rest rewrites expressions only, never the template's text between tags.
        return TAGS.matcher(source).replaceAll(tag -> Matcher.quoteReplacement(adaptExpression(tag.group())));
    }

    private static String adaptExpression(String tag) {
        // transformers passes tools= and documents= always, None without: defined, where Jinjava's null is not
        String adapted = ALWAYS_DEFINED.matcher(tag).replaceAll(m -> m.group(2) == null ? "true" : "false");
        adapted = NOT_IS.matcher(adapted).replaceAll(m -> Matcher.quoteReplacement("not (" + m.group(1) + " is "
                + (m.group(2) == null ? "" : m.group(2)) + m.group(3) + ")"));
        // jinja2 binds `not a == b` as `not (a == b)`; Jinjava as `(not a) == b`, silently false or a coercion error
        adapted = NOT_COMPARE.matcher(adapted).replaceAll(m -> Matcher.quoteReplacement("not (" + m.group(1) + " "
                + m.group(2) + " " + m.group(3) + ")"));
        return adapted;
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

    /**
     * {@code tojson} as transformers defines it: Python's {@code json.dumps(x, ensure_ascii=False, indent=None,
     * separators=None, sort_keys=False)}, each settable by name or position (Llama 3.x writes its tools with
     * {@code tojson(indent=4)}).
     */
    private static final class PythonToJson implements Filter {
        private static final List<String> PARAMETERS = List.of("ensure_ascii", "indent", "separators", "sort_keys");

        @Override
        public String getName() {
            return "tojson";
        }

        @Override
        public Object filter(Object var, JinjavaInterpreter interpreter, String... args) {
            return filter(var, interpreter, (Object[]) args, Map.of());
        }

        @Override
        public Object filter(Object var, JinjavaInterpreter interpreter, Object[] args, Map<String, Object> kwargs) {
            Map<String, Object> options = new HashMap<>();
            for (int i = 0; i < args.length; i++) {
                if (i >= PARAMETERS.size()) {
                    throw new IllegalArgumentException("tojson takes at most " + PARAMETERS.size() + " arguments "
                            + PARAMETERS + ", got " + args.length);
                }
                options.put(PARAMETERS.get(i), args[i]);
            }
            for (Map.Entry<String, Object> option : kwargs.entrySet()) {
                if (!PARAMETERS.contains(option.getKey())) {
                    throw new IllegalArgumentException("tojson has no argument " + option.getKey() + "; it takes "
                            + PARAMETERS);
                }
                options.put(option.getKey(), option.getValue());
            }
            return PythonBuiltins.jsonDumps(var, ObjectTruthValue.evaluate(options.get("ensure_ascii")),
                    options.get("indent"), options.get("separators"),
                    ObjectTruthValue.evaluate(options.get("sort_keys")));
        }
    }

    /**
     * jinja2's {@code is iterable} is true of a string too (Llama 3.1 asks {@code message.content is mapping or
     * message.content is iterable} of a tool's result and writes a string content as JSON); Jinjava's is not.
     */
    private static final class PythonIterable extends IsIterableExpTest {
        @Override
        public boolean evaluate(Object var, JinjavaInterpreter interpreter, Object... args) {
            return var instanceof String || super.evaluate(var, interpreter, args);
        }
    }

    /**
     * {@code {{ x }}} writes a boolean, a list and a dict as Python's str() does ({@code True}, {@code ['a', None]};
     * Jinjava: {@code true}, {@code [a, null]}).
     */
    private static final class PythonOutput implements ExpressionStrategy {
        @Override
        public RenderedOutputNode interpretOutput(ExpressionToken token, JinjavaInterpreter interpreter) {
            Object value = interpreter.resolveELExpression(token.getExpr(), token.getLineNumber());
            String python = PythonBuiltins.str(value);
            return new RenderedOutputNode(python != null ? python : interpreter.getAsString(value));
        }
    }

    /**
     * jinja2's {@code trim(value, chars=None)}: Python's {@code str.strip(chars)}, whose whitespace is
     * {@code str.isspace()}'s (Jinjava's trim strips only ASCII control characters and spaces, and would keep an
     * ideographic space or a no-break space at the end of a message that Mistral v0.3, Llama 3 and Gemma trim).
     */
    private static final class PythonTrim implements Filter {
        @Override
        public String getName() {
            return "trim";
        }

        @Override
        public Object filter(Object var, JinjavaInterpreter interpreter, String... args) {
            if (var == null) {
                return null;
            }
            String chars = args.length > 0 && args[0] != null ? args[0] : null;
            return PythonBuiltins.strip(var.toString(), chars);
        }
    }
}
