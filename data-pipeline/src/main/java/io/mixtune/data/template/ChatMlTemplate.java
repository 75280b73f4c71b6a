package io.mixtune.data.template;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * ChatML: {@code <|im_start|>role\ncontent<|im_end|>\n} per message, no BOS. The assistant's content and the
 * {@code <|im_end|>} that closes it are the targets.
 */
public final class ChatMlTemplate implements ChatTemplate {

    @Override
    public String name() {
        return "chatml";
    }

    @Override
    public List<Segment> segments(Conversation conversation, TextTokenizer tokenizer) {
        List<Segment> segments = new ArrayList<>();
        StringBuilder prompt = new StringBuilder();
        int turn = 0;
        for (Message message : conversation.messages()) {
            String role = message.role().name().toLowerCase(Locale.ROOT);
            if (message.role() != Role.ASSISTANT) {
                prompt.append("<|im_start|>").append(role).append('\n').append(message.content()).append("<|im_end|>\n");
                continue;
            }
            prompt.append("<|im_start|>assistant\n");
            segments.add(new Segment(tokenizer.encode(prompt.toString(), false), false, turn));
            segments.add(new Segment(tokenizer.encode(message.content() + "<|im_end|>", false), true, turn));
            prompt.setLength(0);
            prompt.append('\n');
            turn++;
        }
        return segments;
    }
}
