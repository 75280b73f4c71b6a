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
 * ChatML: {@code <|im_start|>role\ncontent<|im_end|>\n} per message, no BOS. The assistant's content and the
 * {@code <|im_end|>} that closes it are the targets. The first piece is encoded as the start of a text and every later
 * one as a continuation, which gives the ids of tokenizing the whole rendered chat at once (as transformers'
 * apply_chat_template does) while the target boundaries stay exact. The template's strings go through
 * {@link TextTokenizer#control}: where the tokenizer declares {@code <|im_start|>} special, the template's are that
 * token and a message's are text.
 */
public final class ChatMlTemplate implements ChatTemplate {

    @Override
    public String name() {
        return "chatml";
    }

    /** ChatML as apply_chat_template renders it, with {@code {% generation %}} around each answer and its end. */
    public static final String JINJA = "{% for message in messages %}"
            + "{{ '<|im_start|>' + message['role'] + '\n' }}"
            + "{% if message['role'] == 'assistant' %}"
            + "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
            + "{% else %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
            + "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    @Override
    public String jinja() {
        return JINJA;
    }

    /** A piece of the rendered chat: the first as the start of a text, every later one as a continuation. */
    static long[] encode(String text, boolean first, TextTokenizer tokenizer) {
        return first ? tokenizer.encode(text, false) : tokenizer.encodeContinuation(text);
    }

    @Override
    public List<Segment> segments(Conversation conversation, TextTokenizer tokenizer) {
        String problem = conversation.toolProblem(name());
        if (problem != null) {
            throw new InvalidRecordException(conversation.source(), problem);
        }
        List<Segment> segments = new ArrayList<>();
        StringBuilder prompt = new StringBuilder();
        int turn = 0;
        for (Message message : conversation.messages()) {
            String role = message.role().name().toLowerCase(Locale.ROOT);
            if (message.role() != Role.ASSISTANT) {
                prompt.append(tokenizer.control("<|im_start|>" + role + "\n")).append(message.content())
                        .append(tokenizer.control("<|im_end|>\n"));
                continue;
            }
            prompt.append(tokenizer.control("<|im_start|>assistant\n"));
            segments.add(new Segment(encode(prompt.toString(), segments.isEmpty(), tokenizer), false, turn));
            segments.add(new Segment(tokenizer.encodeContinuation(message.content()
                    + tokenizer.control("<|im_end|>")), true, turn));
            prompt.setLength(0);
            prompt.append('\n');
            turn++;
        }
        segments.add(new Segment(tokenizer.encodeContinuation(prompt.toString()), false, turn - 1));
        return segments;
    }
}
