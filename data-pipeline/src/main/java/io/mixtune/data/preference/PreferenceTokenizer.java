package io.mixtune.data.preference;

import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.template.ChatTemplate;
import io.mixtune.data.template.Segment;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.util.Arrays;
import java.util.List;

/**
 * Tokenizes preference pairs with a chat template: prompt + completion for each side, the completion being the last
 * assistant turn's target segments. Each side fits maxSeqLen: the completion keeps its head (at least half the length
 * when both are long) and the prompt its tail, behind the BOS when the template starts with one.
 */
public final class PreferenceTokenizer {
    private final ChatTemplate template;
    private final TextTokenizer tokenizer;
    private final int maxSeqLen;
    private final long bosId;

    public PreferenceTokenizer(ChatTemplate template, TextTokenizer tokenizer, int maxSeqLen, long bosId) {
        this.template = template;
        this.tokenizer = tokenizer;
        this.maxSeqLen = maxSeqLen;
        this.bosId = bosId;
    }

    /** @throws InvalidRecordException when the prompt alone is longer than maxSeqLen */
    public PreferenceSample tokenize(PreferencePair pair) {
        long[][] chosen = promptAndCompletion(pair, pair.chosen());
        long[][] rejected = promptAndCompletion(pair, pair.rejected());
        if (!Arrays.equals(chosen[0], rejected[0])) {
            throw new IllegalStateException(pair.source() + ": the template tokenized the shared prompt two ways");
        }
        long[] prompt = chosen[0];
        if (prompt.length >= maxSeqLen) {
            throw new InvalidRecordException(pair.source(), "prompt longer than max_seq_len: " + prompt.length
                    + " tokens, max_seq_len " + maxSeqLen);
        }
        int longest = Math.max(chosen[1].length, rejected[1].length);
        int completionBudget = Math.min(longest, Math.max(maxSeqLen - prompt.length, maxSeqLen / 2));
        int promptBudget = maxSeqLen - completionBudget;
        return new PreferenceSample(tail(prompt, promptBudget), head(chosen[1], completionBudget),
                head(rejected[1], completionBudget), pair.margin(), pair.source());
    }

    private long[][] promptAndCompletion(PreferencePair pair, String answer) {
        List<Segment> segments = template.segments(pair.with(answer), tokenizer);
        int lastTurn = segments.get(segments.size() - 1).turn();
        int promptLength = 0;
        int completionLength = 0;
        for (Segment segment : segments) {
            if (segment.turn() == lastTurn && segment.target()) {
                completionLength += segment.ids().length;
            } else if (completionLength == 0) {
                promptLength += segment.ids().length;
            }
        }
        long[] prompt = new long[promptLength];
        long[] completion = new long[completionLength];
        int p = 0;
        int c = 0;
        for (Segment segment : segments) {
            boolean isCompletion = segment.turn() == lastTurn && segment.target();
            for (long id : segment.ids()) {
                if (isCompletion) {
                    completion[c++] = id;
                } else if (c == 0) {
                    prompt[p++] = id;
                }
            }
        }
        return new long[][] {prompt, completion};
    }

    private long[] tail(long[] prompt, int budget) {
        if (prompt.length <= budget) {
            return prompt;
        }
        boolean keepBos = prompt.length > 0 && prompt[0] == bosId;
        long[] kept = new long[budget];
        int from = prompt.length - (keepBos ? budget - 1 : budget);
        if (keepBos) {
            kept[0] = bosId;
            System.arraycopy(prompt, from, kept, 1, budget - 1);
        } else {
            System.arraycopy(prompt, from, kept, 0, budget);
        }
        return kept;
    }

    private static long[] head(long[] completion, int budget) {
        return completion.length <= budget ? completion : Arrays.copyOf(completion, budget);
    }
}
