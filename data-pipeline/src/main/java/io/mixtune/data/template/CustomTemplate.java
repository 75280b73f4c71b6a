package io.mixtune.data.template;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.chat.Message;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.util.ArrayList;
import java.util.List;

/**
 * A template written in the recipe ({@link CustomTemplateConfig}): per role, prefix + content + suffix. Tokenized as
 * ChatML is: the text between two trained spans is one piece, the assistant's content and suffix another, the first
 * piece encoded as the start of a text and every later one as a continuation, BOS and EOS spliced in as ids. That
 * gives the ids of tokenizing the rendered text at once wherever a trained span starts and ends at a character no BPE
 * merge crosses (a newline, as in ChatML); where the prefix ends in a space or a letter, the target boundary is kept
 * exact and the ids may differ from the one-string tokenization there. The strings are the template's: special tokens
 * the tokenizer declares are control tokens in them ({@link TextTokenizer#control}), and text in a message.
 */
public final class CustomTemplate implements ChatTemplate {
    private final CustomTemplateConfig strings;
    private final long bosId;
    private final long eosId;

    public CustomTemplate(CustomTemplateConfig strings, long bosId, long eosId) {
        this.strings = strings;
        this.bosId = bosId;
        this.eosId = eosId;
    }

    @Override
    public String name() {
        return "custom";
    }

    /**
     * The template as Jinja for a tokenizer_config.json: each role's prefix, content and suffix, the assistant's content
     * and suffix (and EOS) inside {@code {% generation %}}, after_assistant outside it, and the assistant's prefix as
     * the generation prompt. transformers tokenizes the rendering at once, so its ids equal these where the pieces
     * tokenize apart as together (the class comment: trained spans that start and end after a newline, as ChatML's).
     */
    @Override
    public String jinja() {
        return (strings.bos() ? "{{ bos_token }}" : "") + "{% for message in messages %}"
                + "{% if message['role'] == 'system' %}{{ " + literal(strings.systemPrefix()) + " + message['content'] + "
                + literal(strings.systemSuffix()) + " }}"
                + "{% elif message['role'] == 'user' %}{{ " + literal(strings.userPrefix()) + " + message['content'] + "
                + literal(strings.userSuffix()) + " }}"
                + "{% elif message['role'] == 'assistant' %}{{ " + literal(strings.assistantPrefix()) + " }}"
                + "{% generation %}{{ message['content'] + " + literal(strings.assistantSuffix())
                + (strings.eosAfterAssistant() ? " + eos_token" : "") + " }}{% endgeneration %}"
                + "{{ " + literal(strings.afterAssistant()) + " }}"
                + "{% endif %}{% endfor %}"
                + "{% if add_generation_prompt %}{{ " + literal(strings.assistantPrefix()) + " }}{% endif %}";
    }

    /**
     * A Jinja string literal of {@code text}: quote and backslash escaped, a carriage return as {@code \r} (Jinja
     * turns a raw one inside a literal into a newline); other characters, newlines included, stand as they are.
     */
    static String literal(String text) {
        StringBuilder out = new StringBuilder("'");
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            switch (c) {
                case '\\' -> out.append("\\\\");
                case '\'' -> out.append("\\'");
                case '\r' -> out.append("\\r");
                default -> out.append(c);
            }
        }
        return out.append('\'').toString();
    }

    @Override
    public List<Segment> segments(Conversation conversation, TextTokenizer tokenizer) {
        String problem = conversation.toolProblem(name());
        if (problem != null) {
            throw new InvalidRecordException(conversation.source(), problem);
        }
        List<Segment> segments = new ArrayList<>();
        if (strings.bos() && bosId != TextTokenizer.NO_BOS) { // "{{ bos_token }}" renders nothing without one
            segments.add(new Segment(new long[] {bosId}, false, 0));
        }
        boolean firstText = true;
        StringBuilder prompt = new StringBuilder();
        int turn = 0;
        for (Message message : conversation.messages()) {
            switch (message.role()) {
                case SYSTEM -> prompt.append(tokenizer.control(strings.systemPrefix())).append(message.content())
                        .append(tokenizer.control(strings.systemSuffix()));
                case USER -> prompt.append(tokenizer.control(strings.userPrefix())).append(message.content())
                        .append(tokenizer.control(strings.userSuffix()));
                case ASSISTANT -> {
                    prompt.append(tokenizer.control(strings.assistantPrefix()));
                    if (prompt.length() > 0) {
                        long[] ids = ChatMlTemplate.encode(prompt.toString(), firstText, tokenizer);
                        segments.add(new Segment(ids, false, turn));
                        firstText = false;
                    }
                    String target = message.content() + tokenizer.control(strings.assistantSuffix());
                    segments.add(new Segment(ChatMlTemplate.encode(target, firstText, tokenizer), true, turn));
                    firstText = false;
                    if (strings.eosAfterAssistant()) {
                        segments.add(new Segment(new long[] {eosId}, true, turn));
                    }
                    prompt.setLength(0);
                    prompt.append(tokenizer.control(strings.afterAssistant()));
                    turn++;
                }
            }
        }
        if (prompt.length() > 0) {
            segments.add(new Segment(tokenizer.encodeContinuation(prompt.toString()), false, turn - 1));
        }
        return segments;
    }
}
