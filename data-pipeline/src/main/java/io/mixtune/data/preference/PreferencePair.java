package io.mixtune.data.preference;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import java.util.ArrayList;
import java.util.List;

/**
 * Two answers to one prompt, the better one chosen, in TRL's two formats: standard, {@code {prompt, chosen,
 * rejected}} with strings (raw text that no chat template wraps), or conversational, with message lists: a prompt of
 * messages and string answers, or chosen and rejected as whole conversations that share every message but the last
 * answer, as UltraFeedback-binarized has them (its string prompt then only repeats the last user message); optional
 * score_chosen and score_rejected.
 *
 * @param prompt raw text, or the shared messages ending with the user's last message
 * @param scoreChosen null when the record has no scores
 */
public record PreferencePair(Prompt prompt, String chosen, String rejected, Double scoreChosen,
        Double scoreRejected, String source) {

    /** What comes before the answers. */
    public sealed interface Prompt permits Text, Messages {}

    /** TRL's standard format: the text the answers continue, tokenized as it is (with BOS, the answers with EOS). */
    public record Text(String text) implements Prompt {}

    /** TRL's conversational format: messages that the chat template renders, the answers as assistant messages. */
    public record Messages(List<Message> messages) implements Prompt {
        public Messages {
            messages = List.copyOf(messages);
        }
    }

    /** A conversational pair. */
    public PreferencePair(List<Message> prompt, String chosen, String rejected, Double scoreChosen,
            Double scoreRejected, String source) {
        this(new Messages(prompt), chosen, rejected, scoreChosen, scoreRejected, source);
    }

    public PreferencePair {
        if (chosen.isEmpty() || rejected.isEmpty()) {
            throw new InvalidRecordException(source, "empty completion: the " + (chosen.isEmpty() ? "chosen" : "rejected")
                    + " answer is empty");
        }
        if (chosen.equals(rejected)) {
            throw new InvalidRecordException(source, "chosen equals rejected: a pair teaches nothing when both answers "
                    + "are the same");
        }
        if ((scoreChosen == null) != (scoreRejected == null)) {
            throw new InvalidRecordException(source, "score_chosen and score_rejected come together or not at all");
        }
    }

    /** The conversation ending with one of the answers; conversational pairs only. */
    public Conversation with(String answer) {
        if (!(prompt instanceof Messages conversational)) {
            throw new IllegalStateException(source + ": a pair with a text prompt is no conversation");
        }
        List<Message> messages = new ArrayList<>(conversational.messages());
        messages.add(new Message(Role.ASSISTANT, answer));
        return new Conversation(messages, source);
    }

    /** score_chosen - score_rejected, or null without scores. */
    public Double margin() {
        return scoreChosen == null ? null : scoreChosen - scoreRejected;
    }

    /** Reads one record; throws InvalidRecordException naming the field that is wrong. */
    static PreferencePair parse(JsonNode record, String source) {
        try {
            JsonNode chosen = required(record, "chosen");
            JsonNode rejected = required(record, "rejected");
            Double scoreChosen = score(record, "score_chosen");
            Double scoreRejected = score(record, "score_rejected");
            if (chosen.isTextual() && rejected.isTextual()) {
                JsonNode prompt = required(record, "prompt");
                Prompt before = prompt.isTextual() ? new Text(prompt.asText()) : new Messages(messages(prompt,
                        "prompt"));
                return new PreferencePair(before, chosen.asText(), rejected.asText(), scoreChosen, scoreRejected,
                        source);
            }
            List<Message> chosenMessages = messages(chosen, "chosen");
            List<Message> rejectedMessages = messages(rejected, "rejected");
            Message chosenAnswer = chosenMessages.get(chosenMessages.size() - 1);
            Message rejectedAnswer = rejectedMessages.get(rejectedMessages.size() - 1);
            if (chosenAnswer.role() != Role.ASSISTANT || rejectedAnswer.role() != Role.ASSISTANT) {
                throw new InvalidRecordException(source, "chosen and rejected must end with an assistant message");
            }
            List<Message> shared = chosenMessages.subList(0, chosenMessages.size() - 1);
            if (!shared.equals(rejectedMessages.subList(0, rejectedMessages.size() - 1))) {
                throw new InvalidRecordException(source, "chosen and rejected differ before their last message: they "
                        + "must share the prompt");
            }
            if (record.hasNonNull("prompt") && record.get("prompt").isTextual() && !shared.isEmpty()
                    && !shared.get(shared.size() - 1).content().equals(record.get("prompt").asText())) {
                throw new InvalidRecordException(source, "prompt differs from the last user message of chosen");
            }
            return new PreferencePair(shared, chosenAnswer.content(), rejectedAnswer.content(), scoreChosen,
                    scoreRejected, source);
        } catch (IllegalArgumentException e) {
            throw new InvalidRecordException(source, e.getMessage());
        }
    }

    private static JsonNode required(JsonNode record, String field) {
        if (!record.hasNonNull(field)) {
            throw new IllegalArgumentException("missing field " + field);
        }
        return record.get(field);
    }

    private static Double score(JsonNode record, String field) {
        JsonNode node = record.get(field);
        if (node == null || node.isNull()) {
            return null;
        }
        if (!node.isNumber()) {
            throw new IllegalArgumentException("field " + field + " is not a number: " + node);
        }
        return node.doubleValue();
    }

    public static List<Message> messages(JsonNode list, String field) {
        if (!list.isArray() || list.isEmpty()) {
            throw new IllegalArgumentException("field " + field + " must be a string or a non-empty list of messages");
        }
        List<Message> messages = new ArrayList<>();
        for (JsonNode message : list) {
            JsonNode role = message.get("role");
            JsonNode content = message.get("content");
            if (role == null || !role.isTextual() || content == null || !content.isTextual()) {
                throw new IllegalArgumentException(field + "[] needs string fields role and content, got " + message);
            }
            messages.add(new Message(switch (role.asText()) {
                case "system" -> Role.SYSTEM;
                case "user" -> Role.USER;
                case "assistant" -> Role.ASSISTANT;
                default -> throw new IllegalArgumentException("unknown role \"" + role.asText() + "\" in " + field);
            }, content.asText()));
        }
        return messages;
    }
}
