package io.mixtune.data.preference;

import static io.mixtune.data.preference.PreferenceGoldens.BOS;
import static io.mixtune.data.preference.PreferenceGoldens.EOS;
import static io.mixtune.data.preference.PreferenceGoldens.UNLIMITED;
import static io.mixtune.data.preference.PreferenceGoldens.longs;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.data.preference.PreferenceTokenizer.Truncation;
import io.mixtune.data.template.ChatTemplate;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Pairs as TRL 1.13's experimental ORPOTrainer and CPOTrainer tokenize them (interop/make_orpo_goldens.py runs their
 * own maybe_extract_prompt, maybe_apply_chat_template and tokenize_row, which both trainers share): ORPO and CPO read
 * pairs through DPO's tokenizer, and its rows (prompt + answer, the answer's tokens labelled) are TRL's on the bundled
 * conversational pairs and on string pairs. One case differs on purpose: where the prompt's last token merges with an
 * answer's first ("is" + "n't" is "isn"), TRL moves that token into the answer and tokenizes prompt + answer whole,
 * while mixtune keeps one prompt for both answers (DPOTrainer 1.13's rule).
 */
class OrpoTokenizationGoldenTest {
    private static PreferenceGoldens goldens;
    private static TextTokenizer tokenizer;
    private static JsonNode golden;

    @BeforeAll
    static void open() throws IOException {
        goldens = PreferenceGoldens.open("trl-orpo-tokenized.json");
        tokenizer = goldens.tokenizer;
        golden = goldens.golden;
    }

    @AfterAll
    static void close() {
        goldens.close();
    }

    @Test
    void bundledPairsAreTrlOrpoTrainersRows() {
        PreferenceTokenizer pairs = new PreferenceTokenizer(ChatTemplate.byName(golden.get("template").asText(), BOS,
                EOS), tokenizer, UNLIMITED, EOS, Truncation.KEEP_START);
        int compared = 0;
        for (JsonNode c : golden.get("conversational")) {
            PreferenceSample sample = pairs.tokenize(PreferencePair.parse(c.get("record"), "golden:" + compared));
            assertRows(c, sample, "pair " + compared);
            compared++;
        }
        assertEquals(24, compared);
    }

    @Test
    void stringPairsAreTrlsRowsButWhereThePromptsLastTokenMerges() {
        PreferenceTokenizer pairs = new PreferenceTokenizer(ChatTemplate.byName("mistral", BOS, EOS), tokenizer,
                UNLIMITED, EOS, Truncation.KEEP_START);
        JsonNode standard = golden.get("standard");
        for (int i = 0; i < 2; i++) {
            assertRows(standard.get(i), pairs.tokenize(PreferencePair.parse(standard.get(i).get("record"), "s")),
                    "string pair " + i);
        }
        JsonNode merged = standard.get(2);
        PreferenceSample sample = pairs.tokenize(PreferencePair.parse(merged.get("record"), "merged"));
        // TRL: the chosen row is the text tokenized whole, its prompt one token shorter ("isn" is the answer's)
        long[] trlChosen = longs(merged.get("chosen_input_ids"));
        assertFalse(java.util.Arrays.equals(trlChosen, PreferenceTest.concat(sample.promptIds(), sample.chosenIds())));
        assertEquals(sample.promptIds().length - 1, prompt(merged.get("chosen_labels")));
        // the rejected answer does not merge: the same row as TRL's
        assertArrayEquals(longs(merged.get("rejected_input_ids")),
                PreferenceTest.concat(sample.promptIds(), sample.rejectedIds()));
    }

    private static void assertRows(JsonNode c, PreferenceSample sample, String where) {
        assertArrayEquals(longs(c.get("chosen_input_ids")), PreferenceTest.concat(sample.promptIds(),
                sample.chosenIds()), where + " chosen");
        assertArrayEquals(longs(c.get("rejected_input_ids")), PreferenceTest.concat(sample.promptIds(),
                sample.rejectedIds()), where + " rejected");
        assertEquals(sample.promptIds().length, prompt(c.get("chosen_labels")), where + " chosen prompt");
        assertEquals(sample.promptIds().length, prompt(c.get("rejected_labels")), where + " rejected prompt");
    }

    /** The tokens TRL's labels leave out (-100): the row's prompt. */
    private static int prompt(JsonNode labels) {
        int n = 0;
        while (n < labels.size() && labels.get(n).asLong() == -100) {
            n++;
        }
        return n;
    }
}
