package io.mixtune.data.preference;

import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.read.JsonRecords;
import java.nio.file.Path;
import java.util.function.Consumer;

/** Streams the preference pairs of a data file; unusable records go to the handler with file:line, as chats do. */
public final class PreferenceFileReader {
    private final Path file;

    public PreferenceFileReader(Path file) {
        this.file = file;
    }

    public void read(Consumer<PreferencePair> pairs, Consumer<InvalidRecordException> invalid) {
        new JsonRecords(file).read((line, record) -> {
            String source = file + ":" + line;
            try {
                if (!record.isObject()) {
                    throw new InvalidRecordException(source, "a record is a JSON object, got " + record.getNodeType());
                }
                pairs.accept(PreferencePair.parse(record, source));
            } catch (InvalidRecordException e) {
                invalid.accept(e);
            }
        }, invalid);
    }
}
