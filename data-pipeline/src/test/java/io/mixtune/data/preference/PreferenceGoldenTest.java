package io.mixtune.data.preference;

import static io.mixtune.data.preference.PreferenceGoldens.BOS;
import static io.mixtune.data.preference.PreferenceGoldens.EOS;
import static io.mixtune.data.preference.PreferenceGoldens.UNLIMITED;
import static io.mixtune.data.preference.PreferenceGoldens.longs;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.preference.PreferenceTokenizer.Truncation;
import io.mixtune.data.template.ChatTemplate;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Preference pairs tokenized and truncated as TRL 1.13 does (interop/make_preference_goldens.py runs TRL's own
 * DPOTrainer._prepare_dataset, DataCollatorForPreference and RewardTrainer._prepare_dataset): conversational pairs
 * through the chat template with everything after the prompt as the completion (ChatML's "\n" after
 * {@code <|im_end|>} too), string pairs as raw text with BOS and EOS, DPO's keep_start truncation and the reward
 * model's drop of longer pairs, at max_length 48.
 */
class PreferenceGoldenTest {
    private static PreferenceGoldens goldens;
    private static TextTokenizer tokenizer;
    private static JsonNode golden;

    @BeforeAll
    static void open() throws IOException {
        goldens = PreferenceGoldens.open("trl-tokenized.json");
        tokenizer = goldens.tokenizer;
        golden = goldens.golden;
    }

    @AfterAll
    static void close() {
        goldens.close();
    }

    @Test
    void dpoPairsAreTrlsPromptAndCompletionIdsCutAtTheEnd() {
        int maxLength = golden.get("max_length").asInt();
        for (JsonNode c : golden.get("cases")) {
            String where = c.get("template").asText() + " " + c.get("name").asText();
            PreferencePair pair = PreferencePair.parse(c.get("record"), where);
            JsonNode dpo = c.get("dpo");
            PreferenceSample whole = tokenizer(c, UNLIMITED, Truncation.KEEP_START).tokenize(pair);
            if (!dpo.get("kept").asBoolean()) {
                InvalidRecordException dropped = assertThrows(InvalidRecordException.class,
                        () -> tokenizer(c, maxLength, Truncation.KEEP_START).tokenize(pair), where);
                assertEquals("prompt longer than max_seq_len", dropped.reason(), where);
                continue;
            }
            assertArrayEquals(longs(dpo.get("prompt_ids")), whole.promptIds(), "prompt, " + where);
            assertArrayEquals(longs(dpo.get("chosen_ids")), whole.chosenIds(), "chosen, " + where);
            assertArrayEquals(longs(dpo.get("rejected_ids")), whole.rejectedIds(), "rejected, " + where);
            assertEquals(false, whole.truncated(), where);

            PreferenceSample cut = tokenizer(c, maxLength, Truncation.KEEP_START).tokenize(pair);
            assertRow(dpo.get("chosen_row"), cut.promptIds(), cut.chosenIds(), "chosen row, " + where);
            assertRow(dpo.get("rejected_row"), cut.promptIds(), cut.rejectedIds(), "rejected row, " + where);
            assertEquals(whole.promptIds().length + Math.max(whole.chosenIds().length, whole.rejectedIds().length)
                    > maxLength, cut.truncated(), where);
        }
    }

    @Test
    void rewardPairsAreTrlsWholeSequencesAndLongerOnesAreDropped() {
        int maxLength = golden.get("max_length").asInt();
        int dropped = 0;
        for (JsonNode c : golden.get("cases")) {
            String where = c.get("template").asText() + " " + c.get("name").asText();
            PreferencePair pair = PreferencePair.parse(c.get("record"), where);
            JsonNode reward = c.get("reward");
            PreferenceSample whole = tokenizer(c, UNLIMITED, Truncation.DROP).tokenize(pair);
            assertArrayEquals(longs(reward.get("chosen_ids")), PreferenceTest.concat(whole.promptIds(),
                    whole.chosenIds()), "chosen, " + where);
            assertArrayEquals(longs(reward.get("rejected_ids")), PreferenceTest.concat(whole.promptIds(),
                    whole.rejectedIds()), "rejected, " + where);
            PreferenceTokenizer limited = tokenizer(c, maxLength, Truncation.DROP);
            if (reward.get("kept").asBoolean()) {
                PreferenceSample kept = limited.tokenize(pair);
                assertArrayEquals(longs(reward.get("chosen_ids")), PreferenceTest.concat(kept.promptIds(),
                        kept.chosenIds()), "chosen kept whole, " + where);
            } else {
                InvalidRecordException e = assertThrows(InvalidRecordException.class, () -> limited.tokenize(pair),
                        where);
                assertTrue(e.reason().equals("pair longer than max_seq_len")
                        || e.reason().equals("prompt longer than max_seq_len"), e.getMessage());
                dropped++;
            }
        }
        assertEquals(7, dropped, "the golden's pairs longer than max_length");
    }

    private static PreferenceTokenizer tokenizer(JsonNode c, int maxSeqLen, Truncation truncation) {
        ChatTemplate template = ChatTemplate.byName(c.get("template").asText(), BOS, EOS);
        return new PreferenceTokenizer(template, tokenizer, maxSeqLen, EOS, truncation);
    }

    /** A collated row (no padding) is prompt + completion, and its completion mask marks the completion. */
    private static void assertRow(JsonNode row, long[] prompt, long[] completion, String where) {
        assertArrayEquals(longs(row.get("input_ids")), PreferenceTest.concat(prompt, completion), where);
        long[] mask = longs(row.get("completion_mask"));
        for (int t = 0; t < mask.length; t++) {
            assertEquals(t >= prompt.length ? 1 : 0, mask[t], where + ", position " + t);
        }
    }
}
