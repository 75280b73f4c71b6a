package io.mixtune.data.template;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * The Mistral and Mixtral instruct v0.1 format as Mistral's reference tokenizer builds it (mistral-common,
 * InstructTokenizerV1): BOS, then per exchange encode("[INST] " + user + " [/INST]") and encode(assistant) + EOS; a
 * system prompt goes in front of the first user text, followed by a blank line. As text:
 * {@code <s> [INST] u1 [/INST] a1</s> [INST] u2 [/INST] a2</s>}. "[INST]" is text in the v1 tokenizer and a control
 * token where the tokenizer.json declares it special (v3); only the template's own is ever one.
 */
public final class MistralTemplate implements ChatTemplate {
    private final long bosId;
    private final long eosId;

    public MistralTemplate(long bosId, long eosId) {
        this.bosId = bosId;
        this.eosId = eosId;
    }

    @Override
    public String name() {
        return "mistral";
    }

    /**
     * Rendered as one text, "[/INST]" is followed by a space before the answer: the space and the answer's first
     * word make the "▁word" piece that encoding the answer on its own gives (tested on every golden chat,
     * BuiltInJinjaTest), and the text between BOS/EOS is encoded apart as around any special token.
     */
    public static final String JINJA = "{{ bos_token }}{% for message in messages %}"
            + "{% if message['role'] == 'user' %}{{ '[INST] ' }}"
            + "{% if loop.index0 == 1 and messages[0]['role'] == 'system' and messages[0]['content'] %}"
            + "{{ messages[0]['content'] + '\n\n' }}{% endif %}{{ message['content'] + ' [/INST]' }}"
            + "{% elif message['role'] == 'assistant' %}"
            + "{% generation %}{{ ' ' + message['content'] + eos_token }}{% endgeneration %}"
            + "{% endif %}{% endfor %}";

    /** The BOS id each sample begins with; {@link TextTokenizer#NO_BOS} where there is none. */
    public long bosId() {
        return bosId;
    }

    @Override
    public String jinja() {
        return JINJA;
    }

    @Override
    public List<Segment> segments(Conversation conversation, TextTokenizer tokenizer) {
        String problem = conversation.toolProblem(name());
        if (problem == null) {
            problem = alternationProblem(conversation);
        }
        if (problem != null) {
            throw new InvalidRecordException(conversation.source(), problem);
        }
        List<Segment> segments = new ArrayList<>();
        if (bosId != TextTokenizer.NO_BOS) { // JINJA's bos_token renders nothing where the tokenizer has none
            segments.add(new Segment(new long[] {bosId}, false, 0));
        }
        List<Message> turns = conversation.turns();
        String system = conversation.system();
        for (int i = 0; i < turns.size(); i += 2) {
            int turn = i / 2;
            String user = turns.get(i).content();
            if (i == 0 && system != null && !system.isEmpty()) {
                user = system + "\n\n" + user;
            }
            String prompt = tokenizer.control("[INST] ") + user + tokenizer.control(" [/INST]");
            segments.add(new Segment(tokenizer.encode(prompt, false), false, turn));
            segments.add(new Segment(tokenizer.encode(turns.get(i + 1).content(), false), true, turn));
            segments.add(new Segment(new long[] {eosId}, true, turn));
        }
        return segments;
    }

    /**
     * Null when, after an optional system message, user and assistant messages alternate strictly from a user
     * message, none of them empty, as Mistral's reference tokenizer (mistral-common) demands; else what is wrong.
     */
    static String alternationProblem(Conversation conversation) {
        List<Message> messages = conversation.messages();
        int first = conversation.system() == null ? 0 : 1;
        for (int i = first; i < messages.size(); i++) {
            Message message = messages.get(i);
            Role expected = (i - first) % 2 == 0 ? Role.USER : Role.ASSISTANT;
            if (message.role() != expected) {
                String why = switch (message.role()) {
                    case USER -> "two user messages in a row";
                    case ASSISTANT -> i == first ? "the assistant speaks first" : "two assistant messages in a row";
                    default -> "the mistral template has no " + name(message.role()) + " messages";
                };
                return "message " + (i + 1) + " is from the " + name(message.role()) + " but the "
                        + name(expected) + " should speak there: " + why;
            }
            if (message.content().isEmpty()) {
                return "message " + (i + 1) + " (" + name(message.role()) + ") is empty";
            }
        }
        return null;
    }

    private static String name(Role role) {
        return role.name().toLowerCase(Locale.ROOT);
    }
}
