package io.mixtune.data.chat;

import java.util.List;

/**
 * A chat to train on: an optional system message, then user and assistant messages strictly alternating, starting
 * with a user message and ending with an assistant message.
 *
 * @param source where it came from, as file:line, for error messages
 */
public record Conversation(List<Message> messages, String source) {

    public Conversation {
        messages = List.copyOf(messages);
        String problem = problem(messages);
        if (problem != null) {
            throw new InvalidRecordException(source, problem);
        }
    }

    /** Null when the messages make a valid training conversation, else what is wrong with them. */
    static String problem(List<Message> messages) {
        if (messages.isEmpty()) {
            return "empty conversation: no messages";
        }
        int first = messages.get(0).role() == Role.SYSTEM ? 1 : 0;
        if (first == messages.size()) {
            return "only a system message: a conversation needs a user and an assistant turn";
        }
        for (int i = first; i < messages.size(); i++) {
            Message message = messages.get(i);
            Role expected = (i - first) % 2 == 0 ? Role.USER : Role.ASSISTANT;
            if (message.role() == Role.SYSTEM) {
                return "message " + (i + 1) + " is a system message: only the first message may be one";
            }
            if (message.role() != expected) {
                String why = expected == Role.ASSISTANT ? "two user messages in a row"
                        : i == first ? "the assistant speaks first" : "two assistant messages in a row";
                return "message " + (i + 1) + " is from the " + name(message.role()) + " but the "
                        + name(expected) + " should speak there: " + why;
            }
            if (message.content().isEmpty() && message.role() != Role.SYSTEM) {
                return "message " + (i + 1) + " (" + name(message.role()) + ") is empty";
            }
        }
        if (messages.get(messages.size() - 1).role() != Role.ASSISTANT) {
            return "the last message is from the user: a training conversation ends with the assistant";
        }
        return null;
    }

    private static String name(Role role) {
        return role.name().toLowerCase(java.util.Locale.ROOT);
    }

    /** The system message's content, or null when there is none. */
    public String system() {
        return messages.get(0).role() == Role.SYSTEM ? messages.get(0).content() : null;
    }

    /** The user and assistant messages, in order, without the system message. */
    public List<Message> turns() {
        return system() == null ? messages : messages.subList(1, messages.size());
    }
}
