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
