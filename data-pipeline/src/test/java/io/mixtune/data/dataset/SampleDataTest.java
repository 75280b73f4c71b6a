package io.mixtune.data.dataset;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.preference.PreferenceFileReader;
import io.mixtune.data.preference.PreferencePair;
import io.mixtune.data.read.ChatFileReader;
import io.mixtune.data.read.ChatFormat;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The sample data the quickstart trains on reads with no invalid record. */
class SampleDataTest {
    static final Path SAMPLES = Path.of("..", "data", "samples");

    @Test
    void sampleChatsAndPairsAreAllValid() {
        List<Conversation> chats = new ArrayList<>();
        List<InvalidRecordException> invalid = new ArrayList<>();
        ChatFormat format = new ChatFileReader(SAMPLES.resolve("chats.jsonl"), null).read(chats::add, invalid::add);
        assertEquals(List.of(), invalid);
        assertEquals(ChatFormat.MESSAGES, format);
        assertEquals(200, chats.size());
        List<PreferencePair> pairs = new ArrayList<>();
        new PreferenceFileReader(SAMPLES.resolve("preferences.jsonl")).read(pairs::add, invalid::add);
        assertEquals(List.of(), invalid);
        assertEquals(200, pairs.size());
    }
}
