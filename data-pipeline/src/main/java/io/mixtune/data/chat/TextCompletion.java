package io.mixtune.data.chat;

/**
 * A standard prompt-completion record (TRL's {@code {"prompt": str, "completion": str}}): raw text, no chat template;
 * the loss falls on the completion.
 */
public record TextCompletion(String prompt, String completion, String source) implements SftRecord {}
