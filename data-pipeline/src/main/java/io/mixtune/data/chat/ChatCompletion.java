package io.mixtune.data.chat;

/**
 * A conversational prompt-completion record (TRL's {@code {"prompt": [messages], "completion": [messages]}}): the
 * prompt and the completion as one conversation, rendered by the chat template; the loss falls on every token after
 * the prompt rendered with the generation prompt.
 *
 * @param promptAnswers how many assistant messages the prompt holds: the completion starts at the template's turn of
 *     that number (its first answer)
 */
public record ChatCompletion(Conversation conversation, int promptAnswers) implements SftRecord {
    @Override
    public String source() {
        return conversation.source();
    }
}
