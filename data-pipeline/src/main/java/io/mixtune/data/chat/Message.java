package io.mixtune.data.chat;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One message of a chat. Content is kept exactly as written: templates decide about whitespace.
 *
 * @param fields the message's other keys as the record has them (an assistant's {@code tool_calls}, a tool message's
 *     {@code tool_call_id} and {@code name}...), as plain maps, lists, strings, numbers and booleans: a Hugging Face
 *     template gets them as transformers' apply_chat_template passes a message's keys; the built-in templates refuse
 *     tool calls
 */
public record Message(Role role, String content, Map<String, Object> fields) {
    public Message {
        if (role == null || content == null) {
            throw new IllegalArgumentException("a message needs a role and a content");
        }
        fields = fields == null ? Map.of() : Collections.unmodifiableMap(new LinkedHashMap<>(fields));
    }

    public Message(Role role, String content) {
        this(role, content, Map.of());
    }

    /** The same message with another content, its other keys kept. */
    public Message withContent(String content) {
        return new Message(role, content, fields);
    }

    /** Whether it is an assistant's call of tools: a non-empty {@code tool_calls}. */
    public boolean callsTools() {
        Object calls = fields.get("tool_calls");
        return calls != null && !(calls instanceof List<?> list && list.isEmpty());
    }
}
