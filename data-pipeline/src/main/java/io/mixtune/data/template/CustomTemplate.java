package io.mixtune.data.template;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.Message;
import io.mixtune.data.dataset.DataConfig.CustomTemplateConfig;
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

    @Override
    public List<Segment> segments(Conversation conversation, TextTokenizer tokenizer) {
        List<Segment> segments = new ArrayList<>();
        if (strings.bos()) {
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
