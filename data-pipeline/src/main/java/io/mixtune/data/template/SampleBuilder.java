package io.mixtune.data.template;

import io.mixtune.data.chat.ChatCompletion;
import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.chat.PlainText;
import io.mixtune.data.chat.SftRecord;
import io.mixtune.data.chat.TextCompletion;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Template, loss mask and truncation: a conversation becomes a {@link TokenizedSample} of at most maxSeqLen tokens.
 * Truncation drops whole trailing exchanges first, and cuts into a target only when the first exchange alone is too
 * long (keeping its head); a conversation whose first prompt alone fills the length has nothing left to learn and is
 * refused (the caller counts it).
 *
 * <p>A text or a prompt-completion record becomes the sample TRL 1.13's SFTTrainer._prepare_dataset makes of it: ids,
 * labels from the completion mask, cut to maxSeqLen keeping the start (truncation_mode keep_start, and what packing
 * strategy bfd does to a sequence longer than a row), refused like a chat when no trained token is left.
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

    /** Any SFT record: a chat, a text, or a prompt with its completion. */
    public Built build(SftRecord record) {
        if (record instanceof PlainText text) {
            return trainedFrom(rawText(text.text(), true), 0, text.source());
        }
        if (record instanceof TextCompletion pair) {
            // TRL tokenizes prompt + completion + EOS as one text and masks as many tokens as the prompt has alone,
            // even where the prompt's last token merges with the completion's first ("is" + "n't")
            return trainedFrom(rawText(pair.prompt() + pair.completion(), true), rawText(pair.prompt(), false).length,
                    pair.source());
        }
        if (record instanceof ChatCompletion pair) {
            return chatCompletion(pair);
        }
        return build((Conversation) record);
    }

    /**
     * Raw text as TRL tokenizes a text or a standard prompt-completion: plain {@code tokenizer(text)}, with the BOS
     * from the tokenizer, special tokens that the tokenizer.json declares read as those tokens where the text writes
     * them (transformers splits them out of any text; in a chat message mixtune keeps them text); with {@code
     * closed}, ending with the EOS, which SFTTrainer._prepare_dataset's add_eos appends as text unless the text
     * already ends with it, and transformers then reads as the EOS token.
     */
    private long[] rawText(String text, boolean closed) {
        if (!closed) {
            return tokenizer.encode(tokenizer.control(text), true);
        }
        String eos = tokenizer.eosText();
        String open = text.endsWith(eos) ? text.substring(0, text.length() - eos.length()) : text;
        long[] ids = tokenizer.encode(tokenizer.control(open), true);
        long[] withEos = Arrays.copyOf(ids, ids.length + 1);
        withEos[ids.length] = tokenizer.eosId();
        return withEos;
    }

    /**
     * TRL's conversational prompt-completion: the prompt and the completion rendered as one conversation, the
     * completion mask 1 from the end of the prompt rendered with the generation prompt, which is where the template's
     * turn of the completion's first answer starts its trained tokens (after ChatML's "<|im_start|>assistant\n",
     * Mistral's " [/INST]"); everything after it trains, what the template writes after the answer included.
     */
    private Built chatCompletion(ChatCompletion pair) {
        List<Segment> segments = template.segments(pair.conversation(), tokenizer);
        int promptLength = 0;
        for (Segment segment : segments) {
            if (segment.target() && segment.turn() == pair.promptAnswers()) {
                break;
            }
            promptLength += segment.ids().length;
        }
        long[] ids = segments.stream().map(Segment::ids).flatMapToLong(Arrays::stream).toArray();
        return trainedFrom(ids, promptLength, pair.source());
    }

    /**
     * The sample of ids whose tokens train from {@code promptLength} on (all of them with train_on_inputs, TRL's
     * completion_only_loss false), cut to maxSeqLen keeping the start.
     */
    private Built trainedFrom(long[] ids, int promptLength, String source) {
        int length = Math.min(ids.length, maxSeqLen);
        int firstTrained = policy == LossPolicy.TRAIN_ON_INPUTS ? 0 : promptLength;
        if (firstTrained >= length) {
            throw new InvalidRecordException(source, NO_TARGET_LEFT + ": the prompt alone takes " + promptLength
                    + " of max_seq_len " + maxSeqLen + " tokens");
        }
        long[] kept = Arrays.copyOf(ids, length);
        long[] labels = kept.clone();
        Arrays.fill(labels, 0, firstTrained, TokenizedSample.IGNORE);
        return new Built(new TokenizedSample(kept, labels, source), length < ids.length ? Fit.TARGET_CUT : Fit.WHOLE);
    }

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
