package io.mixtune.data.preference;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.data.preference.PreferencePair.Messages;
import io.mixtune.data.preference.PreferencePair.Prompt;
import io.mixtune.data.preference.PreferencePair.Text;
import java.util.ArrayList;
import java.util.List;

/**
 * One answer to a prompt and whether it is desirable: TRL's unpaired preference format, which KTO trains on. Standard
 * {@code {prompt, completion, label}} with strings (raw text), or conversational with message lists (the completion
 * one assistant message). A preference pair becomes two of them ({@link #unpair}).
 *
 * @param label true for a desirable completion
 */
public record LabeledCompletion(Prompt prompt, String completion, boolean label, String source) {

    public LabeledCompletion {
        if (completion.isEmpty()) {
            throw new InvalidRecordException(source, "empty completion");
        }
    }

    /** The conversation ending with the completion; conversational examples only. */
    public Conversation conversation() {
        if (!(prompt instanceof Messages conversational)) {
            throw new IllegalStateException(source + ": an example with a text prompt is no conversation");
        }
        List<Message> messages = new ArrayList<>(conversational.messages());
        messages.add(new Message(Role.ASSISTANT, completion));
        return new Conversation(messages, source);
    }

    /**
     * Pairs unpaired as TRL 1.13's unpair_preference_dataset does it (data_utils._unpair_row, a batched map of
     * datasets' default 1000 rows): per block of 1000 pairs in order, every chosen answer (desirable), then every
     * rejected one.
     */
    public static List<LabeledCompletion> unpair(List<PreferencePair> pairs) {
        int block = 1000;
        List<LabeledCompletion> out = new ArrayList<>(2 * pairs.size());
        for (int from = 0; from < pairs.size(); from += block) {
            List<PreferencePair> rows = pairs.subList(from, Math.min(pairs.size(), from + block));
            rows.forEach(p -> out.add(new LabeledCompletion(p.prompt(), p.chosen(), true, p.source())));
            rows.forEach(p -> out.add(new LabeledCompletion(p.prompt(), p.rejected(), false, p.source())));
        }
        return out;
    }

    /** Whether a record is unpaired (has a completion), not a pair. */
    static boolean isUnpaired(JsonNode record) {
        return record.has("completion") || record.has("label");
    }

    /** Reads one unpaired record; throws InvalidRecordException naming the field that is wrong. */
    static LabeledCompletion parse(JsonNode record, String source) {
        JsonNode prompt = record.get("prompt");
        JsonNode completion = record.get("completion");
        JsonNode label = record.get("label");
        if (prompt == null || prompt.isNull() || completion == null || completion.isNull()) {
            throw new InvalidRecordException(source, "missing field " + (prompt == null || prompt.isNull() ? "prompt"
                    : "completion") + ": an unpaired example is {prompt, completion, label}");
        }
        if (label == null || !label.isBoolean()) {
            throw new InvalidRecordException(source, "field label must be true (desirable) or false (undesirable), "
                    + "got " + label);
        }
        try {
            if (prompt.isTextual() && completion.isTextual()) {
                return new LabeledCompletion(new Text(prompt.asText()), completion.asText(), label.asBoolean(),
                        source);
            }
            if (prompt.isTextual() || completion.isTextual()) {
                throw new InvalidRecordException(source, "prompt and completion are both strings or both message "
                        + "lists");
            }
            List<Message> answer = PreferencePair.messages(completion, "completion");
            if (answer.size() != 1 || answer.get(0).role() != Role.ASSISTANT) {
                throw new InvalidRecordException(source, "completion must be one assistant message");
            }
            return new LabeledCompletion(new Messages(PreferencePair.messages(prompt, "prompt")),
                    answer.get(0).content(), label.asBoolean(), source);
        } catch (IllegalArgumentException e) {
            throw new InvalidRecordException(source, e.getMessage());
        }
    }
}
