package io.mixtune.data.preference;

import static io.mixtune.data.preference.PreferenceTokenizer.Truncation.DROP;
import static io.mixtune.data.preference.PreferenceTokenizer.Truncation.KEEP_START;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.data.template.LossPolicy;
import io.mixtune.data.template.MistralTemplate;
import io.mixtune.data.template.SampleBuilder;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class PreferenceTest {
    static TextTokenizer tokenizer;
    static final MistralTemplate MISTRAL = new MistralTemplate(1, 2);

    @BeforeAll
    static void open() {
        tokenizer = TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2);
    }

    @AfterAll
    static void close() {
        tokenizer.close();
    }

    @Test
    void bothLayoutsParseAndBadPairsAreNamed(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("pairs.jsonl");
        Files.writeString(file, String.join("\n",
                "{\"prompt\": \"Capital of France?\", \"chosen\": \"Paris.\", \"rejected\": \"Lyon.\"}",
                "{\"prompt\": \"Hi\", \"chosen\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", "
                        + "\"content\": \"Hello!\"}], \"rejected\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": "
                        + "\"assistant\", \"content\": \"What.\"}], \"score_chosen\": 8.5, \"score_rejected\": 2}",
                "{\"prompt\": \"Q\", \"chosen\": \"same\", \"rejected\": \"same\"}",
                "{\"prompt\": \"Q\", \"chosen\": \"\", \"rejected\": \"no\"}",
                "{\"chosen\": [{\"role\": \"user\", \"content\": \"A\"}, {\"role\": \"assistant\", \"content\": \"x\"}], "
                        + "\"rejected\": [{\"role\": \"user\", \"content\": \"B\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}",
                "{\"prompt\": \"Q\", \"chosen\": \"a\", \"rejected\": \"b\", \"score_chosen\": 3}",
                "{\"prompt\": \"Q\", \"rejected\": \"b\"}"));
        List<PreferencePair> pairs = new ArrayList<>();
        List<InvalidRecordException> invalid = new ArrayList<>();
        new PreferenceFileReader(file).read(pairs::add, invalid::add);
        assertEquals(2, pairs.size());
        assertEquals(new PreferencePair.Text("Capital of France?"), pairs.get(0).prompt(), "a string prompt stays text");
        assertEquals(new PreferencePair.Messages(List.of(new Message(Role.USER, "Hi"))), pairs.get(1).prompt(),
                "UltraFeedback's layout (a string prompt beside message lists) is conversational");
        assertEquals("Hello!", pairs.get(1).chosen());
        assertEquals(6.5, pairs.get(1).margin());
        List<String> problems = invalid.stream().map(InvalidRecordException::getMessage).toList();
        assertEquals(5, problems.size(), problems.toString());
        assertTrue(problems.get(0).startsWith(file + ":3: chosen equals rejected"), problems.get(0));
        assertTrue(problems.get(1).startsWith(file + ":4: empty completion: the chosen answer is empty"), problems.get(1));
        assertTrue(problems.get(2).startsWith(file + ":5: chosen and rejected differ before their last message"),
                problems.get(2));
        assertTrue(problems.get(3).contains(":6: score_chosen and score_rejected come together"), problems.get(3));
        assertTrue(problems.get(4).contains(":7: missing field chosen"), problems.get(4));
    }

    @Test
    void promptPlusCompletionIsTheChatSampleAndTheCompletionItsLastTarget() {
        PreferencePair pair = new PreferencePair(List.of(new Message(Role.SYSTEM, "Be kind."),
                new Message(Role.USER, "Hi"), new Message(Role.ASSISTANT, "Hello."), new Message(Role.USER, "2+2?")),
                "It is 4.", "Five, obviously.", null, null, "t:1");
        PreferenceSample sample = new PreferenceTokenizer(MISTRAL, tokenizer, 512, 2, KEEP_START).tokenize(pair);
        TokenizedSample chat = new SampleBuilder(MISTRAL, tokenizer, 512, LossPolicy.LAST_TURN)
                .build(pair.with(pair.chosen())).sample();
        long[] joined = concat(sample.promptIds(), sample.chosenIds());
        assertArrayEquals(chat.inputIds(), joined);
        for (int i = 0; i < joined.length; i++) {
            assertEquals(i >= sample.promptIds().length, chat.labels()[i] != TokenizedSample.IGNORE, "position " + i);
        }
        assertEquals(2, sample.rejectedIds()[sample.rejectedIds().length - 1], "each completion ends with EOS");
        assertEquals("Five, obviously.", tokenizer.decode(sample.rejectedIds()));
    }

    @Test
    void dpoKeepsTheStartOfLongPairsAndTheRewardModelDropsThem() {
        // 64 tokens: a prompt of ~50 keeps [INST] and all its words, the completions are cut at the end (TRL's
        // keep_start); the reward model's tokenizer drops the pair instead (RewardTrainer's filter).
        String prompt = "word ".repeat(40).trim() + " Question?";
        String answer = "A " + "word ".repeat(100).trim();
        PreferencePair pair = new PreferencePair(List.of(new Message(Role.USER, prompt)), answer, "B " + answer, null,
                null, "t:2");
        PreferenceSample whole = new PreferenceTokenizer(MISTRAL, tokenizer, 512, 2, KEEP_START).tokenize(pair);
        PreferenceSample cut = new PreferenceTokenizer(MISTRAL, tokenizer, 64, 2, KEEP_START).tokenize(pair);
        assertArrayEquals(whole.promptIds(), cut.promptIds(), "the prompt is whole, [INST] and all");
        assertEquals(64, cut.promptIds().length + cut.chosenIds().length);
        assertArrayEquals(Arrays.copyOf(whole.chosenIds(), cut.chosenIds().length), cut.chosenIds());
        assertTrue(cut.truncated());
        InvalidRecordException dropped = assertThrows(InvalidRecordException.class,
                () -> new PreferenceTokenizer(MISTRAL, tokenizer, 64, 2, DROP).tokenize(pair));
        assertEquals("pair longer than max_seq_len", dropped.reason(), dropped.getMessage());

        PreferenceSample shortAnswers = new PreferenceTokenizer(MISTRAL, tokenizer, 64, 2, KEEP_START).tokenize(
                new PreferencePair(List.of(new Message(Role.USER, prompt)), "Yes.", "No.", null, null, "t:3"));
        assertEquals("Yes.", tokenizer.decode(shortAnswers.chosenIds()), "short completions are whole");
        assertTrue(!shortAnswers.truncated());

        String tooLong = "word ".repeat(200).trim();
        for (PreferenceTokenizer.Truncation truncation : PreferenceTokenizer.Truncation.values()) {
            InvalidRecordException refused = assertThrows(InvalidRecordException.class, () -> new PreferenceTokenizer(
                    MISTRAL, tokenizer, 64, 2, truncation).tokenize(new PreferencePair(List.of(new Message(Role.USER,
                            tooLong)), "Yes.", "No.", null, null, "t:4")));
            assertTrue(refused.getMessage().startsWith("t:4: prompt longer than max_seq_len"), refused.getMessage());
        }
    }

    @Test
    void stagesSplitByOrderOrByMarginLargestFirst() {
        List<PreferenceSample> samples = new ArrayList<>();
        double[] margins = {1, 7, 3, 7, 0.5, 2};
        for (int i = 0; i < margins.length; i++) {
            samples.add(new PreferenceSample(new long[0], new long[0], new long[0], margins[i], "s" + i));
        }
        assertEquals(List.of(2, 2, 2), StageSplit.byOrder(samples, 3).stream().map(List::size).toList());
        List<List<PreferenceSample>> stages = StageSplit.byMargin(samples, 3);
        assertEquals(List.of("s1", "s3"), stages.get(0).stream().map(PreferenceSample::source).toList());
        assertEquals(List.of("s2", "s5"), stages.get(1).stream().map(PreferenceSample::source).toList());
        assertEquals(List.of("s0", "s4"), stages.get(2).stream().map(PreferenceSample::source).toList());
        samples.set(2, new PreferenceSample(new long[0], new long[0], new long[0], null, "s2"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> StageSplit.byMargin(samples, 2)).getMessage()
                .contains("s2: splitting stages by score margin needs score_chosen and score_rejected"));
    }

    static long[] concat(long[] a, long[] b) {
        long[] joined = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, joined, a.length, b.length);
        return joined;
    }
}
