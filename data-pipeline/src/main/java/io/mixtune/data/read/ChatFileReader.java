package io.mixtune.data.read;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import java.nio.file.Path;
import java.util.function.Consumer;

/**
 * Streams the conversations of a chat data file (see {@link JsonRecords} for the file layouts). Each record that
 * cannot be used goes to the invalid-record handler with its file:line and what is wrong; the handler decides
 * whether the run stops (it throws) or skips and counts.
 */
public final class ChatFileReader {
    private final Path file;
    private final ChatFormat fixedFormat;

    /** @param format the records' format, or null to detect it from the file's first record */
    public ChatFileReader(Path file, ChatFormat format) {
        this.file = file;
        this.fixedFormat = format;
    }

    /** Reads every record; returns the format the file is in (null for a file without records). */
    public ChatFormat read(Consumer<Conversation> conversations, Consumer<InvalidRecordException> invalid) {
        ChatFormat[] format = {fixedFormat};
        new JsonRecords(file).read((line, record) -> {
            String source = file + ":" + line;
            try {
                if (!record.isObject()) {
                    throw new InvalidRecordException(source, "a record is a JSON object, got " + record.getNodeType());
                }
                if (format[0] == null) {
                    format[0] = ChatFormat.detect(record);
                    if (format[0] == null) {
                        throw new InvalidRecordException(source, "unknown record layout: expected messages, data "
                                + "(UltraChat), conversations (ShareGPT), conversation (Firefly) or instruction and "
                                + "output (Alpaca)");
                    }
                }
                conversations.accept(format[0].conversation(record, source));
            } catch (IllegalArgumentException e) {
                invalid.accept(new InvalidRecordException(source, e.getMessage()));
            } catch (InvalidRecordException e) {
                invalid.accept(e);
            }
        }, invalid);
        return format[0];
    }
}
