package io.mixtune.data.preference;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.preference.PreferencePair.Text;
import io.mixtune.data.template.ChatTemplate;
import io.mixtune.data.template.Segment;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.util.Arrays;
import java.util.List;

/**
 * Tokenizes preference pairs as TRL 1.13's DPOTrainer and RewardTrainer do: a conversational pair through the chat
 * template, the completion being every token after the prompt (the last answer, its EOS or end marker, and what the
 * template writes after it, such as ChatML's "\n" after {@code <|im_end|>}); a standard pair (text prompt) as raw text,
 * the prompt with the tokenizer's BOS and prompt + answer + EOS, the completion being the latter's ids past the
 * prompt's. A pair whose prompt alone fills max_seq_len is invalid; a longer one is cut or dropped as {@link
 * Truncation} says.
 */
public final class PreferenceTokenizer {
    /** What a pair longer than max_seq_len becomes. */
    public enum Truncation {
        /** DPOTrainer's default truncation_mode: each side keeps its first max_seq_len tokens, the completion's end cut. */
        KEEP_START,
        /** RewardTrainer's filter: a pair with a side longer than max_seq_len is invalid (skipped with skip_invalid). */
        DROP
    }

    private final ChatTemplate template;
    private final TextTokenizer tokenizer;
    private final int maxSeqLen;
    private final long eosId;
    private final Truncation truncation;

    public PreferenceTokenizer(ChatTemplate template, TextTokenizer tokenizer, int maxSeqLen, long eosId,
            Truncation truncation) {
        this.template = template;
        this.tokenizer = tokenizer;
        this.maxSeqLen = maxSeqLen;
        this.eosId = eosId;
        this.truncation = truncation;
    }

    /** @throws InvalidRecordException when the prompt alone fills maxSeqLen, or with DROP when a side is longer */
    public PreferenceSample tokenize(PreferencePair pair) {
        long[][] sides = pair.prompt() instanceof Text text ? standard(text.text(), pair) : conversational(pair);
        long[] prompt = sides[0];
        long[] chosen = sides[1];
        long[] rejected = sides[2];
        if (chosen.length == 0 || rejected.length == 0) {
            throw new InvalidRecordException(pair.source(), "empty completion: the prompt's tokens take in the "
                    + (chosen.length == 0 ? "chosen" : "rejected") + " answer");
        }
        if (prompt.length >= maxSeqLen) {
            throw new InvalidRecordException(pair.source(), "prompt longer than max_seq_len: " + prompt.length
                    + " tokens, max_seq_len " + maxSeqLen);
        }
        int longest = prompt.length + Math.max(chosen.length, rejected.length);
        if (longest <= maxSeqLen) {
            return new PreferenceSample(prompt, chosen, rejected, pair.margin(), pair.source());
        }
        if (truncation == Truncation.DROP) {
            throw new InvalidRecordException(pair.source(), "pair longer than max_seq_len: " + longest + " tokens, "
                    + "max_seq_len " + maxSeqLen);
        }
        int budget = maxSeqLen - prompt.length;
        return new PreferenceSample(prompt, head(chosen, budget), head(rejected, budget), pair.margin(), pair.source(),
                true);
    }

    /**
     * An unpaired example (KTO) as TRL 1.13's KTOTrainer._prepare_dataset tokenizes it: conversational through the chat
     * template as a pair's side; standard as raw text, prompt and prompt + completion each with BOS, EOS appended to
     * the completion unless it ends with the EOS text already (TRL's add_eos appends the text, which the tokenizer
     * reads as the EOS id: here the id is appended and a closing EOS text taken for it). The completion is kept whole:
     * KTO's collator cuts each row to its first max_length tokens ({@link LabeledSample#row}); a prompt alone filling
     * max_seq_len is invalid (TRL drops it).
     */
    public LabeledSample tokenize(LabeledCompletion example) {
        long[][] sides;
        if (example.prompt() instanceof Text text) {
            String eos = eosText();
            String completion = eos != null && example.completion().endsWith(eos)
                    ? example.completion().substring(0, example.completion().length() - eos.length())
                    : example.completion();
            long[] prompt = tokenizer.encode(text.text(), true);
            long[] whole = withEos(tokenizer.encode(text.text() + completion, true));
            sides = new long[][] {prompt, tail(whole, prompt.length)};
        } else {
            sides = promptAndCompletion(example.conversation());
        }
        if (sides[1].length == 0) {
            throw new InvalidRecordException(example.source(), "empty completion: the prompt's tokens take in the "
                    + "completion");
        }
        if (sides[0].length >= maxSeqLen) {
            throw new InvalidRecordException(example.source(), "prompt longer than max_seq_len: " + sides[0].length
                    + " tokens, max_seq_len " + maxSeqLen);
        }
        // Whole: the KL row of another example appends this completion to its own prompt before the cut.
        return new LabeledSample(sides[0], sides[1], example.label(), example.source(),
                sides[0].length + sides[1].length > maxSeqLen);
    }

    /** The text of the tokenizer's EOS token (how TRL's add_eos writes it), or null where it decodes to none. */
    private String eosText() {
        String text = tokenizer.tokenText(eosId);
        return text.isEmpty() ? null : text;
    }

    /** Prompt, chosen and rejected ids of a pair the chat template renders. */
    private long[][] conversational(PreferencePair pair) {
        long[][] chosen = promptAndCompletion(pair.with(pair.chosen()));
        long[][] rejected = promptAndCompletion(pair.with(pair.rejected()));
        if (!Arrays.equals(chosen[0], rejected[0])) {
            throw new IllegalStateException(pair.source() + ": the template tokenized the shared prompt two ways");
        }
        return new long[][] {chosen[0], chosen[1], rejected[1]};
    }

    /** The segments before the last turn's first trained one, and all that follow it. */
    private long[][] promptAndCompletion(Conversation conversation) {
        List<Segment> segments = template.segments(conversation, tokenizer);
        int lastTurn = segments.get(segments.size() - 1).turn();
        int promptLength = 0;
        int length = 0;
        boolean inCompletion = false;
        for (Segment segment : segments) {
            inCompletion |= segment.turn() == lastTurn && segment.target();
            promptLength += inCompletion ? 0 : segment.ids().length;
            length += segment.ids().length;
        }
        long[] ids = new long[length];
        int at = 0;
        for (Segment segment : segments) {
            System.arraycopy(segment.ids(), 0, ids, at, segment.ids().length);
            at += segment.ids().length;
        }
        return new long[][] {Arrays.copyOf(ids, promptLength), Arrays.copyOfRange(ids, promptLength, length)};
    }

    /**
     * A standard pair as TRL tokenizes it: prompt, and prompt + answer + EOS, each as one text with BOS; the completion
     * is the latter past the prompt's length, even where the prompt's last token merges with the answer's first
     * ("is" + "n't"), where TRL warns and cuts there too. With DROP the rows are the RewardTrainer's, the whole
     * texts' ids: the prompt is then what the two share.
     */
    private long[][] standard(String prompt, PreferencePair pair) {
        long[] promptIds = tokenizer.encode(prompt, true);
        long[] chosen = withEos(tokenizer.encode(prompt + pair.chosen(), true));
        long[] rejected = withEos(tokenizer.encode(prompt + pair.rejected(), true));
        int split = promptIds.length;
        if (truncation == Truncation.DROP && !(startsWith(chosen, promptIds) && startsWith(rejected, promptIds))) {
            split = 0;
            while (split < Math.min(chosen.length, rejected.length) - 1 && chosen[split] == rejected[split]) {
                split++;
            }
            promptIds = Arrays.copyOf(chosen, split);
        }
        return new long[][] {promptIds, tail(chosen, split), tail(rejected, split)};
    }

    private long[] withEos(long[] ids) {
        long[] closed = Arrays.copyOf(ids, ids.length + 1);
        closed[ids.length] = eosId;
        return closed;
    }

    private static boolean startsWith(long[] ids, long[] prefix) {
        return ids.length >= prefix.length && Arrays.equals(ids, 0, prefix.length, prefix, 0, prefix.length);
    }

    private static long[] tail(long[] ids, int from) {
        return Arrays.copyOfRange(ids, Math.min(from, ids.length), ids.length);
    }

    private static long[] head(long[] completion, int budget) {
        return completion.length <= budget ? completion : Arrays.copyOf(completion, budget);
    }
}
