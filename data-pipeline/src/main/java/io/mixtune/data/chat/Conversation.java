package io.mixtune.data.chat;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Locale;

/**
 * A chat to train on: an optional system message first, then the other messages, ending with an assistant message.
 * Messages after the last assistant message (a user's closing "thanks") teach nothing and are dropped, and counted,
 * as axolotl (which warns) and TRL (which masks them) train the rest; a chat with no assistant message is refused.
 * Which orders of roles a chat may take is the template's to say: the mistral template demands strict user/assistant
 * alternation, a Hugging Face template raises where it objects.
 *
 * @param source where it came from, as file:line, for error messages
 * @param droppedTrailingMessages how many messages after the last assistant message were dropped
 * @param tools the record's tool definitions (OpenAI's {@code tools}) as plain lists and maps, for a Hugging Face
 *     template's {@code tools}, as transformers' apply_chat_template(tools=...) passes them; null when it has none
 */
public record Conversation(List<Message> messages, String source, int droppedTrailingMessages, List<Object> tools)
        implements SftRecord {

    public Conversation {
        messages = List.copyOf(messages);
        tools = tools == null ? null : Collections.unmodifiableList(new ArrayList<>(tools));
        String problem = problem(messages);
        if (problem != null) {
            throw new InvalidRecordException(source, problem);
        }
    }

    /** The messages up to and including the last assistant message; those after it are dropped and counted. */
    public Conversation(List<Message> messages, String source) {
        this(messages, null, source);
    }

    /** As {@link #Conversation(List, String)}, with the record's tool definitions (or null). */
    public Conversation(List<Message> messages, List<Object> tools, String source) {
        this(messages.subList(0, untilLastAnswer(messages)), source, messages.size() - untilLastAnswer(messages),
                tools);
    }

    /**
     * Null when the conversation has no tool messages, tool calls or tool definitions, else which one a template
     * without tools ({@code templateName}) cannot render, and what to use instead.
     */
    public String toolProblem(String templateName) {
        String advice = ": the " + templateName + " template has no tools; use the model's own template "
                + "(data.template: hf), which renders them as transformers does";
        for (int i = 0; i < messages.size(); i++) {
            Message message = messages.get(i);
            if (message.role() == Role.TOOL) {
                return "message " + (i + 1) + " has the role tool" + advice;
            }
            if (message.callsTools()) {
                return "message " + (i + 1) + " (assistant) has tool_calls" + advice;
            }
        }
        return tools != null && !tools.isEmpty() ? "the record has tools" + advice : null;
    }

    private static int untilLastAnswer(List<Message> messages) {
        int end = messages.size();
        while (end > 0 && messages.get(end - 1).role() != Role.ASSISTANT) {
            end--;
        }
        // No assistant message at all: keep them, for problem() to say so.
        return end == 0 ? messages.size() : end;
    }

    /** Null when the messages make a conversation to train on, whatever the template, else what is wrong. */
    static String problem(List<Message> messages) {
        if (messages.isEmpty()) {
            return "empty conversation: no messages";
        }
        int first = messages.get(0).role() == Role.SYSTEM ? 1 : 0;
        if (first == messages.size()) {
            return "only a system message: a conversation needs a user and an assistant turn";
        }
        for (int i = first; i < messages.size(); i++) {
            if (messages.get(i).role() == Role.SYSTEM) {
                return "message " + (i + 1) + " is a system message: only the first message may be one";
            }
        }
        if (messages.stream().noneMatch(m -> m.role() == Role.ASSISTANT)) {
            return "no assistant message: nothing to train on";
        }
        if (messages.get(messages.size() - 1).role() != Role.ASSISTANT) {
            return "the last message is from the " + name(messages.get(messages.size() - 1).role())
                    + ": a training conversation ends with the assistant";
        }
        return null;
    }

    private static String name(Role role) {
        return role.name().toLowerCase(Locale.ROOT);
    }

    /** The system message's content, or null when there is none. */
    public String system() {
        return messages.get(0).role() == Role.SYSTEM ? messages.get(0).content() : null;
    }

    /** The messages after the system message, in order. */
    public List<Message> turns() {
        return system() == null ? messages : messages.subList(1, messages.size());
    }
}
