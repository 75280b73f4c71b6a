package io.mixtune.data.chat;

/**
 * A language-modeling record (TRL's {@code {"text": ...}}, axolotl's {@code type: completion}): continued
 * pretraining, loss on every token.
 */
public record PlainText(String text, String source) implements SftRecord {}
