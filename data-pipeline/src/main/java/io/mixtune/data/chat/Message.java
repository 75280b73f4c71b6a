package io.mixtune.data.chat;

/** One message of a chat. Content is kept exactly as written: templates decide about whitespace. */
public record Message(Role role, String content) {
    public Message {
        if (role == null || content == null) {
            throw new IllegalArgumentException("a message needs a role and a content");
        }
    }
}
