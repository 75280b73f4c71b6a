package io.mixtune.data.template;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.util.ArrayList;
import java.util.List;

/**
 * Template, loss mask and truncation: a conversation becomes a {@link TokenizedSample} of at most maxSeqLen tokens.
 * Truncation drops whole trailing exchanges first, and cuts into a target only when the first exchange alone is too
 * long (keeping its head); a conversation whose first prompt alone fills the length has nothing left to learn and is
 * refused (the caller counts it).
 */
public final class SampleBuilder {
    /**
     * The reason ({@link InvalidRecordException#reason()}) of a conversation whose first prompt alone fills
     * max_seq_len: the data report counts it apart from invalid records.
     */
    public static final String NO_TARGET_LEFT = "no target left after truncation";

    private final ChatTemplate template;
    private final TextTokenizer tokenizer;
    private final int maxSeqLen;
    private final LossPolicy policy;

    public SampleBuilder(ChatTemplate template, TextTokenizer tokenizer, int maxSeqLen, LossPolicy policy) {
        if (maxSeqLen < 2) {
            throw new IllegalArgumentException("max_seq_len must be at least 2, got " + maxSeqLen);
        }
        this.template = template;
        this.tokenizer = tokenizer;
        this.maxSeqLen = maxSeqLen;
        this.policy = policy;
    }

    /** Whether a sample was cut to fit; the counts go into the data report. */
    public enum Fit {
        WHOLE, TRAILING_TURNS_DROPPED, TARGET_CUT
    }

    public record Built(TokenizedSample sample, Fit fit) {}

    /** @throws InvalidRecordException when no target token fits in maxSeqLen */
    public Built build(Conversation conversation) {
        List<Segment> segments = template.segments(conversation, tokenizer);
        int turns = segments.get(segments.size() - 1).turn() + 1;
        // Keep the longest run of whole exchanges that fits.
        int[] turnEnd = new int[turns];
        int length = 0;
        for (Segment segment : segments) {
            length += segment.ids().length;
            turnEnd[segment.turn()] = length;
        }
        int keptTurns = 0;
        while (keptTurns < turns && turnEnd[keptTurns] <= maxSeqLen) {
            keptTurns++;
        }
        Fit fit = keptTurns == turns ? Fit.WHOLE : Fit.TRAILING_TURNS_DROPPED;
        int limit = keptTurns == 0 ? maxSeqLen : turnEnd[keptTurns - 1];
        if (keptTurns == 0) {
            keptTurns = 1;
            fit = Fit.TARGET_CUT;
        }
        int lastTurn = keptTurns - 1;
        List<Long> ids = new ArrayList<>(limit);
        List<Long> labels = new ArrayList<>(limit);
        for (Segment segment : segments) {
            if (segment.turn() > lastTurn) {
                break;
            }
            boolean trained = switch (policy) {
                case ALL_ASSISTANT_TURNS -> segment.target();
                case LAST_TURN -> segment.target() && segment.turn() == lastTurn;
                case TRAIN_ON_INPUTS -> true;
            };
            for (long id : segment.ids()) {
                if (ids.size() == limit) {
                    break;
                }
                ids.add(id);
                labels.add(trained ? id : TokenizedSample.IGNORE);
            }
        }
        TokenizedSample sample = new TokenizedSample(ids.stream().mapToLong(Long::longValue).toArray(),
                labels.stream().mapToLong(Long::longValue).toArray(), conversation.source());
        boolean anyTarget = false;
        for (int i = 0; i < sample.length() && !anyTarget; i++) {
            anyTarget = sample.labels()[i] != TokenizedSample.IGNORE && isTargetPosition(segments, i);
        }
        if (!anyTarget) {
            throw new InvalidRecordException(conversation.source(), NO_TARGET_LEFT + ": the first prompt alone takes "
                    + promptLength(segments) + " of max_seq_len " + maxSeqLen + " tokens");
        }
        return new Built(sample, fit);
    }

    private static boolean isTargetPosition(List<Segment> segments, int position) {
        int start = 0;
        for (Segment segment : segments) {
            if (position < start + segment.ids().length) {
                return segment.target();
            }
            start += segment.ids().length;
        }
        return false;
    }

    private static int promptLength(List<Segment> segments) {
        int length = 0;
        for (Segment segment : segments) {
            if (segment.target()) {
                break;
            }
            length += segment.ids().length;
        }
        return length;
    }
}
