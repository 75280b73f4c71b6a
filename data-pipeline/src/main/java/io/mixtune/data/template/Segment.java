package io.mixtune.data.template;

/**
 * A run of tokens a template produced from one piece of a conversation.
 *
 * @param target whether these are assistant tokens the model learns to produce (content and its closing EOS)
 * @param turn which user-assistant exchange the segment belongs to, from 0; the BOS and a system prompt belong to 0
 */
public record Segment(long[] ids, boolean target, int turn) {}
