package io.mixtune.data.chat;

/**
 * One record of an SFT data file, of one of the dataset types TRL 1.13's SFTTrainer takes: a chat ({@link
 * Conversation}), a language-modeling text ({@link PlainText}), or a prompt with its completion, as raw text ({@link
 * TextCompletion}) or as messages ({@link ChatCompletion}).
 */
public sealed interface SftRecord permits Conversation, PlainText, TextCompletion, ChatCompletion {
    /** Where it came from, as file:line, for error messages. */
    String source();
}
