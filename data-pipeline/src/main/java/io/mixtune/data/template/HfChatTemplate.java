package io.mixtune.data.template;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;

/**
 * A model's own Hugging Face chat template ({@link JinjaChatTemplate}), tokenized as transformers'
 * {@code apply_chat_template(..., tokenize=True, return_assistant_tokens_mask=True)} does it: the conversation is
 * rendered to one text, the text tokenized at once, and the tokens that any character of an assistant span falls in
 * are trained (from the token of its first character to the token of its last, as transformers' {@code char_to_token}
 * picks them).
 *
 * <p>The assistant spans: a template with {@code {% generation %}} blocks says them itself. For one without, each
 * assistant turn is found by rendering prefixes of the conversation, as TRL and axolotl do: the conversation up to and
 * including the turn must render to a prefix of the whole rendering; the turn's content is where that rendering differs
 * from the same prefix with the content replaced by a sentinel; its span runs from the content's start to the end of
 * the prefix rendering, less trailing whitespace (ChatML's newline after {@code <|im_end|>}, a space after
 * {@code </s>}), so the closing EOS or end marker trains and the separator after it does not. A turn that cannot be
 * found this way fails naming the template and the turn.
 *
 * <p>Control tokens come only from the template, never from a message (see {@link TextTokenizer}): special-token
 * texts typed in a message are kept as text, and the {@code bos_token} and {@code eos_token} the template writes are
 * the BOS and EOS ids even where the tokenizer.json does not declare them special (the bundled Mistral v1 one), the
 * text between them encoded as the tokenizers library encodes the pieces between special tokens.
 */
public final class HfChatTemplate implements ChatTemplate {
    /** Stands for an assistant's content when prefixes are rendered: a noncharacter no text holds. */
    private static final String SENTINEL = "\uFDDF";
    /** Around the index of a special-token text typed in a message, while the template renders. */
    private static final char HIDDEN_START = '\uFDD0';
    private static final char HIDDEN_END = '\uFDD1';

    private final JinjaChatTemplate template;
    private final long bosId;
    private final long eosId;

    public HfChatTemplate(JinjaChatTemplate template, long bosId, long eosId) {
        this.template = template;
        this.bosId = bosId;
        this.eosId = eosId;
    }

    @Override
    public String name() {
        return "hf";
    }

    public JinjaChatTemplate template() {
        return template;
    }

    @Override
    public String jinja() {
        return template.source();
    }

    @Override
    public List<Segment> segments(Conversation conversation, TextTokenizer tokenizer) {
        List<Message> messages = conversation.messages();
        List<Object> tools = conversation.tools();
        String where = template.name() + " on " + conversation.source();
        refuseSpecialTextOutsideContent(conversation, specialTexts(tokenizer));
        JinjaChatTemplate.Rendered rendered = render(messages, tools, false, where);
        List<int[]> spans = template.hasGenerationBlocks() ? rendered.generationSpans()
                : assistantSpans(messages, tools, rendered.text(), where);
        if (spans.isEmpty()) {
            throw new IllegalArgumentException(where + ": the chat template's {% generation %} blocks mark no "
                    + "assistant text in this conversation: nothing would be trained");
        }
        Tokens tokens = tokenize(messages, tools, false, rendered.text(), tokenizer, where);
        int n = tokens.ids.length;
        boolean[] target = new boolean[n];
        int[] turnOf = new int[n];
        int[] lastTokenOfTurn = new int[spans.size()];
        for (int turn = 0; turn < spans.size(); turn++) {
            int[] span = spans.get(turn);
            int first = tokens.tokenAt(span[0]);
            int last = tokens.tokenAt(span[1] - 1);
            if (first < 0 || last < first) {
                throw new IllegalArgumentException(where + ": assistant turn " + (turn + 1) + " covers no token");
            }
            for (int t = first; t <= last; t++) {
                target[t] = true;
            }
            lastTokenOfTurn[turn] = last;
        }
        int turn = 0;
        for (int t = 0; t < n; t++) {
            while (turn < spans.size() - 1 && t > lastTokenOfTurn[turn]) {
                turn++;
            }
            turnOf[t] = turn;
        }
        List<Segment> segments = new ArrayList<>();
        int start = 0;
        for (int t = 1; t <= n; t++) {
            if (t == n || target[t] != target[start] || turnOf[t] != turnOf[start]) {
                long[] ids = new long[t - start];
                System.arraycopy(tokens.ids, start, ids, 0, ids.length);
                segments.add(new Segment(ids, target[start], turnOf[start]));
                start = t;
            }
        }
        return segments;
    }

    /**
     * The ids of a conversation that awaits the assistant's answer: rendered with {@code add_generation_prompt}, as
     * {@code generate --chat} and {@code mixtune chat} prompt the model.
     */
    public long[] promptIds(List<Message> messages, TextTokenizer tokenizer) {
        String where = template.name();
        JinjaChatTemplate.Rendered rendered = render(messages, null, true, where);
        return tokenize(messages, null, true, rendered.text(), tokenizer, where).ids;
    }

    private JinjaChatTemplate.Rendered render(List<Message> messages, List<Object> tools, boolean addGenerationPrompt,
            String where) {
        try {
            return template.render(messages, tools, addGenerationPrompt);
        } catch (JinjaChatTemplate.TemplateException e) {
            throw new JinjaChatTemplate.TemplateException(e.getMessage() + " (" + where + ")");
        }
    }

    /**
     * Each assistant message's [start, end) in the whole rendering, found by rendering prefixes (class comment). Where
     * the template renders a message's tool_calls and not its content (Mistral v0.3), or an empty content only when
     * there is one (Qwen2.5), the span starts where the conversation before it ends, rendered with its generation
     * prompt: what the model writes when asked for that turn.
     */
    private List<int[]> assistantSpans(List<Message> messages, List<Object> tools, String whole, String where) {
        List<int[]> spans = new ArrayList<>();
        int turn = 0;
        for (int m = 0; m < messages.size(); m++) {
            if (messages.get(m).role() != Role.ASSISTANT) {
                continue;
            }
            turn++;
            List<Message> upTo = messages.subList(0, m + 1);
            String prefix = render(upTo, tools, false, where).text();
            List<Message> withSentinel = new ArrayList<>(messages.subList(0, m));
            withSentinel.add(messages.get(m).withContent(SENTINEL));
            String marked = render(withSentinel, tools, false, where).text();
            String what = where + ": assistant turn " + turn + " (message " + (m + 1) + ")";
            if (!whole.startsWith(prefix)) {
                throw new IllegalArgumentException(what + ": the conversation up to this turn does not render to a "
                        + "prefix of the whole conversation's rendering, so the turn's tokens cannot be found; mark "
                        + "what trains with {% generation %} ... {% endgeneration %} in the template");
            }
            String notFound = what + ": the template does not render the assistant's content where the "
                    + "conversation ends, so the turn's tokens cannot be found; mark what trains with "
                    + "{% generation %} ... {% endgeneration %} in the template";
            // The sentinel in the content's place: the content lies between the two renderings' common prefix and
            // suffix.
            boolean sentinelShown = marked.contains(SENTINEL);
            int contentStart = commonPrefix(prefix, marked);
            int contentEnd = prefix.length() - commonSuffix(prefix, marked);
            // An empty content that the template writes only when there is one (Qwen2.5's `if message.content` before
            // its tool calls) has no place of its own: the common prefix and suffix overlap.
            boolean emptyWithoutPlace = sentinelShown && contentStart > contentEnd
                    && messages.get(m).content().isEmpty();
            if (emptyWithoutPlace || (!sentinelShown && messages.get(m).callsTools())) {
                // The template writes the tool calls instead of the content (Mistral v0.3), or the empty content
                // without a place (Qwen2.5): the turn starts where the model is asked for it, after the generation
                // prompt.
                String asked = render(messages.subList(0, m), tools, true, where).text();
                contentStart = prefix.startsWith(asked) ? asked.length() : prefix.length();
                contentEnd = contentStart;
            } else if (!sentinelShown) {
                throw new IllegalArgumentException(notFound);
            }
            if (contentStart > contentEnd || contentStart == prefix.length()) {
                throw new IllegalArgumentException(notFound);
            }
            int end = prefix.length();
            while (end > contentEnd && Character.isWhitespace(prefix.charAt(end - 1))) {
                end--;
            }
            if (end <= contentStart) {
                throw new IllegalArgumentException(what + ": the assistant's span is empty");
            }
            spans.add(new int[] {contentStart, end});
        }
        return spans;
    }

    private static int commonPrefix(String a, String b) {
        int n = Math.min(a.length(), b.length());
        int i = 0;
        while (i < n && a.charAt(i) == b.charAt(i)) {
            i++;
        }
        return i;
    }

    private static int commonSuffix(String a, String b) {
        int n = Math.min(a.length(), b.length());
        int i = 0;
        while (i < n && a.charAt(a.length() - 1 - i) == b.charAt(b.length() - 1 - i)) {
            i++;
        }
        return i;
    }

    /** Token ids of the rendered text, each with the [start, end) of the rendered characters it stands for. */
    private record Tokens(long[] ids, int[] starts, int[] ends) {
        /** The first token whose characters hold {@code position}, else the first after it; -1 past the end. */
        int tokenAt(int position) {
            for (int t = 0; t < ids.length; t++) {
                if (starts[t] <= position && position < ends[t]) {
                    return t;
                }
            }
            for (int t = 0; t < ids.length; t++) {
                if (starts[t] >= position) {
                    return t;
                }
            }
            return -1;
        }
    }

    /**
     * Tokenizes the rendered text so that only the template's own text yields control tokens: the template is
     * rendered again with every special-token text in a message hidden behind a placeholder, then the text is cut at
     * the template's BOS and EOS texts (their ids), the template's other special tokens are marked
     * ({@link TextTokenizer#control}), and the placeholders turn back into their text.
     */
    private Tokens tokenize(List<Message> messages, List<Object> tools, boolean addGenerationPrompt, String text,
            TextTokenizer tokenizer, String where) {
        List<String> specials = specialTexts(tokenizer);
        List<String> hidden = new ArrayList<>();
        List<Message> masked = new ArrayList<>(messages.size());
        for (Message message : messages) {
            masked.add(message.withContent(hide(message.content(), specials, hidden)));
        }
        String withPlaceholders = hidden.isEmpty() ? text : render(masked, tools, addGenerationPrompt, where).text();

        List<Long> ids = new ArrayList<>();
        List<int[]> spans = new ArrayList<>();
        StringBuilder chunk = new StringBuilder();
        // Per char of chunk: the rendered text's [start, end) it comes from.
        List<int[]> chunkOrigin = new ArrayList<>();
        int at = 0; // in the rendered text
        int i = 0;
        outer:
        while (i < withPlaceholders.length()) {
            char c = withPlaceholders.charAt(i);
            if (c == HIDDEN_START) {
                int close = withPlaceholders.indexOf(HIDDEN_END, i);
                String original = hidden.get(Integer.parseInt(withPlaceholders.substring(i + 1, close)));
                for (int k = 0; k < original.length(); k++) {
                    chunk.append(original.charAt(k));
                    chunkOrigin.add(new int[] {at + k, at + k + 1});
                }
                at += original.length();
                i = close + 1;
                continue;
            }
            for (String special : specials) {
                if (!withPlaceholders.startsWith(special, i)) {
                    continue;
                }
                boolean bos = special.equals(template.bosToken());
                boolean eos = special.equals(template.eosToken());
                String marker = tokenizer.control(special);
                if ((bos || eos) && marker.equals(special)) {
                    // Not special in this tokenizer.json: the id itself, the text around it encoded apart.
                    flush(chunk, chunkOrigin, tokenizer, ids, spans);
                    ids.add(bos ? bosId : eosId);
                    spans.add(new int[] {at, at + special.length()});
                } else {
                    for (int k = 0; k < marker.length(); k++) {
                        chunk.append(marker.charAt(k));
                        chunkOrigin.add(new int[] {at, at + special.length()});
                    }
                }
                at += special.length();
                i += special.length();
                continue outer;
            }
            chunk.append(c);
            chunkOrigin.add(new int[] {at, at + 1});
            at++;
            i++;
        }
        flush(chunk, chunkOrigin, tokenizer, ids, spans);
        if (at != text.length()) {
            throw new IllegalStateException(where + ": the template renders differently when special-token texts "
                    + "in messages are hidden (" + at + " against " + text.length() + " characters)");
        }
        long[] idArray = new long[ids.size()];
        int[] starts = new int[ids.size()];
        int[] ends = new int[ids.size()];
        for (int t = 0; t < idArray.length; t++) {
            idArray[t] = ids.get(t);
            starts[t] = spans.get(t)[0];
            ends[t] = spans.get(t)[1];
        }
        return new Tokens(idArray, starts, ends);
    }

    /**
     * The texts that render into control tokens: the tokenizer's special tokens and the template's BOS and EOS,
     * longest first.
     */
    private List<String> specialTexts(TextTokenizer tokenizer) {
        List<String> specials = new ArrayList<>(tokenizer.specialTokens());
        for (String token : new String[] {template.bosToken(), template.eosToken()}) {
            if (token != null && !token.isEmpty() && !specials.contains(token)) {
                specials.add(token);
            }
        }
        specials.sort(Comparator.comparingInt(String::length).reversed());
        return specials;
    }

    /**
     * A message's content is kept as text whatever it spells ({@link #hide}), but its other keys (tool_calls, a tool's
     * name...) and the record's tools reach the template as they are, where a template may write them (as JSON) into
     * the text: a special token spelled there would become a control token, so such a record is refused.
     */
    private static void refuseSpecialTextOutsideContent(Conversation conversation, List<String> specials) {
        List<Message> messages = conversation.messages();
        for (int m = 0; m < messages.size(); m++) {
            for (Map.Entry<String, Object> field : messages.get(m).fields().entrySet()) {
                String found = specialTextIn(field.getValue(), specials);
                if (found != null) {
                    throw new InvalidRecordException(conversation.source(), "message " + (m + 1) + "'s "
                            + field.getKey() + " holds the text " + found + ", which the template would write as a "
                            + "control token: only a message's content keeps such text as text");
                }
            }
        }
        String found = specialTextIn(conversation.tools(), specials);
        if (found != null) {
            throw new InvalidRecordException(conversation.source(), "the tools hold the text " + found + ", which the "
                    + "template would write as a control token: only a message's content keeps such text as text");
        }
    }

    /** The first special-token text in a string of {@code value} (a key or value of its maps and lists), or null. */
    private static String specialTextIn(Object value, List<String> specials) {
        if (value instanceof String text) {
            return specials.stream().filter(text::contains).findFirst().orElse(null);
        }
        if (value instanceof Map<?, ?> map) {
            for (Map.Entry<?, ?> entry : map.entrySet()) {
                String found = specialTextIn(entry.getKey(), specials);
                found = found != null ? found : specialTextIn(entry.getValue(), specials);
                if (found != null) {
                    return found;
                }
            }
        }
        if (value instanceof List<?> list) {
            for (Object element : list) {
                String found = specialTextIn(element, specials);
                if (found != null) {
                    return found;
                }
            }
        }
        return null;
    }

    private static String hide(String content, List<String> specials, List<String> hidden) {
        StringBuilder out = new StringBuilder(content.length());
        int i = 0;
        outer:
        while (i < content.length()) {
            for (String special : specials) {
                if (content.startsWith(special, i)) {
                    out.append(HIDDEN_START).append(hidden.size()).append(HIDDEN_END);
                    hidden.add(special);
                    i += special.length();
                    continue outer;
                }
            }
            out.append(content.charAt(i++));
        }
        return out.toString();
    }

    private static void flush(StringBuilder chunk, List<int[]> origin, TextTokenizer tokenizer, List<Long> ids,
            List<int[]> spans) {
        if (chunk.length() == 0) {
            return;
        }
        TextTokenizer.Spans encoded = tokenizer.encodeWithSpans(chunk.toString());
        for (int t = 0; t < encoded.ids().length; t++) {
            int start = encoded.starts()[t];
            int end = encoded.ends()[t];
            int from = origin.get(Math.min(start, origin.size() - 1))[0];
            int to = end > start ? origin.get(end - 1)[1] : from;
            ids.add(encoded.ids()[t]);
            spans.add(new int[] {from, to});
        }
        chunk.setLength(0);
        origin.clear();
    }
}
