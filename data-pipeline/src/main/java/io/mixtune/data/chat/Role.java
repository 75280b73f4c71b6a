package io.mixtune.data.chat;

/** Who speaks a message; a tool message is a tool's result, which only a model's own template renders. */
public enum Role {
    SYSTEM, USER, ASSISTANT, TOOL
}
