package io.mixtune.data.chat;

/** Who speaks a message. */
public enum Role {
    SYSTEM, USER, ASSISTANT
}
