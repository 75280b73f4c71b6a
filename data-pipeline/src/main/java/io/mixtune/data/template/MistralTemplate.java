package io.mixtune.data.template;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.Message;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.util.ArrayList;
import java.util.List;

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

    @Override
    public String jinja() {
        return JINJA;
    }

    @Override
    public List<Segment> segments(Conversation conversation, TextTokenizer tokenizer) {
        List<Segment> segments = new ArrayList<>();
        segments.add(new Segment(new long[] {bosId}, false, 0));
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
}
