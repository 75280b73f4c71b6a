package io.mixtune.data.template;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

class SampleBuilderTest {
    static TextTokenizer tokenizer;
    static final ChatTemplate MISTRAL = new MistralTemplate(1, 2);
    static final Conversation CHAT = new Conversation(List.of(new Message(Role.SYSTEM, "You are terse."),
            new Message(Role.USER, "Name a prime."), new Message(Role.ASSISTANT, "Seven is prime."),
            new Message(Role.USER, "And an even one?"), new Message(Role.ASSISTANT, "Two, the only even prime."),
            new Message(Role.USER, "Thanks"), new Message(Role.ASSISTANT, "You are welcome.")), "test:1");

    @BeforeAll
    static void open() {
        tokenizer = TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2);
    }

    @AfterAll
    static void close() {
        tokenizer.close();
    }

    /** The trained spans, each decoded: the assistant texts, each ending where its EOS (id 2) is. */
    static List<String> trainedSpans(TokenizedSample sample) {
        List<String> spans = new ArrayList<>();
        List<Long> span = new ArrayList<>();
        for (int i = 0; i < sample.length(); i++) {
            if (sample.labels()[i] == TokenizedSample.IGNORE) {
                continue;
            }
            assertEquals(sample.inputIds()[i], sample.labels()[i], "a label is the token itself");
            span.add(sample.labels()[i]);
            boolean last = i + 1 == sample.length() || sample.labels()[i + 1] == TokenizedSample.IGNORE;
            if (last) {
                spans.add(tokenizer.decode(span.stream().mapToLong(Long::longValue).toArray())
                        + (span.get(span.size() - 1) == 2 ? "</s>" : ""));
                span.clear();
            }
        }
        return spans;
    }

    @Test
    void everyAssistantTurnAndItsEosTrainAndNothingElse() {
        SampleBuilder.Built built = new SampleBuilder(MISTRAL, tokenizer, 512, LossPolicy.ALL_ASSISTANT_TURNS).build(CHAT);
        assertEquals(SampleBuilder.Fit.WHOLE, built.fit());
        TokenizedSample sample = built.sample();
        assertEquals(1, sample.inputIds()[0], "BOS first");
        assertEquals(List.of("Seven is prime.</s>", "Two, the only even prime.</s>", "You are welcome.</s>"),
                trainedSpans(sample));
        assertEquals("[INST] You are terse.\n\nName a prime. [/INST] Seven is prime. [INST] And an even one? [/INST] "
                + "Two, the only even prime. [INST] Thanks [/INST] You are welcome.", tokenizer.decode(sample.inputIds()));
    }

    @Test
    void lastTurnOnlyAndTrainOnInputs() {
        TokenizedSample last = new SampleBuilder(MISTRAL, tokenizer, 512, LossPolicy.LAST_TURN).build(CHAT).sample();
        assertEquals(List.of("You are welcome.</s>"), trainedSpans(last));
        TokenizedSample all = new SampleBuilder(MISTRAL, tokenizer, 512, LossPolicy.TRAIN_ON_INPUTS).build(CHAT).sample();
        assertArrayEquals(all.inputIds(), all.labels());
    }

    @Test
    void truncationDropsWholeTrailingTurnsBeforeCuttingATarget() {
        TokenizedSample whole = new SampleBuilder(MISTRAL, tokenizer, 512, LossPolicy.ALL_ASSISTANT_TURNS)
                .build(CHAT).sample();
        List<Segment> segments = MISTRAL.segments(CHAT, tokenizer);
        int firstTurnEnd = 0;
        int firstPrompt = 0;
        for (Segment segment : segments) {
            if (segment.turn() == 0) {
                firstTurnEnd += segment.ids().length;
                if (!segment.target()) {
                    firstPrompt += segment.ids().length;
                }
            }
        }
        SampleBuilder.Built twoTurnsShort = new SampleBuilder(MISTRAL, tokenizer, whole.length() - 1,
                LossPolicy.ALL_ASSISTANT_TURNS).build(CHAT);
        assertEquals(SampleBuilder.Fit.TRAILING_TURNS_DROPPED, twoTurnsShort.fit());
        assertEquals(List.of("Seven is prime.</s>", "Two, the only even prime.</s>"), trainedSpans(twoTurnsShort.sample()));
        assertArrayEquals(Arrays.copyOf(whole.inputIds(), twoTurnsShort.sample().length()),
                twoTurnsShort.sample().inputIds(), "a prefix of the whole sample");

        SampleBuilder.Built cut = new SampleBuilder(MISTRAL, tokenizer, firstTurnEnd - 2, LossPolicy.ALL_ASSISTANT_TURNS)
                .build(CHAT);
        assertEquals(SampleBuilder.Fit.TARGET_CUT, cut.fit());
        assertEquals(firstTurnEnd - 2, cut.sample().length());
        assertArrayEquals(Arrays.copyOf(whole.inputIds(), firstTurnEnd - 2), cut.sample().inputIds());
        assertTrue(cut.sample().targetCount() > 0 && cut.sample().targetCount() < firstTurnEnd - firstPrompt);

        int promptOnly = firstPrompt;
        InvalidRecordException none = assertThrows(InvalidRecordException.class,
                () -> new SampleBuilder(MISTRAL, tokenizer, promptOnly, LossPolicy.ALL_ASSISTANT_TURNS).build(CHAT));
        assertTrue(none.getMessage().startsWith("test:1: no target left after truncation: the first prompt alone takes "
                + firstPrompt + " of max_seq_len " + firstPrompt), none.getMessage());
    }
}
