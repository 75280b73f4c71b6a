package io.mixtune.data.read;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.chat.SftRecord;
import java.nio.file.Path;
import java.util.function.Consumer;

/**
 * Streams the records of an SFT data file (see {@link JsonRecords} for the file layouts): chats, texts, or prompts with
 * their completions. Each record that cannot be used goes to the invalid-record handler with its file:line and what is
 * wrong; the handler decides whether the run stops (it throws) or skips and counts.
 */
public final class ChatFileReader {
    /** TRL's dataset_text_field default. */
    public static final String TEXT_FIELD = "text";

    private final Path file;
    private final ChatFormat fixedFormat;
    private final String textField;

    /** @param format the records' format, or null to detect it from the file's first record */
    public ChatFileReader(Path file, ChatFormat format) {
        this(file, format, TEXT_FIELD);
    }

    /** @param textField the field that holds a language-modeling record's text (TRL's dataset_text_field) */
    public ChatFileReader(Path file, ChatFormat format, String textField) {
        this.file = file;
        this.fixedFormat = format;
        this.textField = textField;
    }

    /** Reads every record of a chat file; a record of another type is invalid. Returns the file's format. */
    public ChatFormat read(Consumer<Conversation> conversations, Consumer<InvalidRecordException> invalid) {
        return readRecords(record -> {
            if (!(record instanceof Conversation conversation)) {
                throw new InvalidRecordException(record.source(), "not a chat: this reads chats only");
            }
            conversations.accept(conversation);
        }, invalid);
    }

    /** Reads every record; returns the format the file is in (null for a file without records). */
    public ChatFormat readRecords(Consumer<SftRecord> records, Consumer<InvalidRecordException> invalid) {
        ChatFormat[] format = {fixedFormat};
        new JsonRecords(file).read((line, record) -> {
            String source = file + ":" + line;
            try {
                if (!record.isObject()) {
                    throw new InvalidRecordException(source, "a record is a JSON object, got " + record.getNodeType());
                }
                if (format[0] == null) {
                    format[0] = ChatFormat.detect(record, textField);
                    if (format[0] == null) {
                        throw new InvalidRecordException(source, "unknown record layout: expected messages, data "
                                + "(UltraChat), conversations (ShareGPT), conversation (Firefly), instruction and "
                                + "output (Alpaca), prompt and completion, or " + textField + " (a text)");
                    }
                }
                records.accept(format[0].record(record, source, textField));
            } catch (IllegalArgumentException e) {
                invalid.accept(new InvalidRecordException(source, e.getMessage()));
            } catch (InvalidRecordException e) {
                invalid.accept(e);
            }
        }, invalid);
        return format[0];
    }
}
