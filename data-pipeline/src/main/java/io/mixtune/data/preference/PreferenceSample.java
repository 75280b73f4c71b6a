package io.mixtune.data.preference;

/**
 * A tokenized preference pair: the shared prompt once, and each completion (every token after the prompt: the answer,
 * its closing EOS or end marker and what the template writes after it, all of which carry the DPO log-probability).
 *
 * @param margin score_chosen - score_rejected, or null without scores
 * @param truncated whether max_seq_len cut a completion's end
 */
public record PreferenceSample(long[] promptIds, long[] chosenIds, long[] rejectedIds, Double margin, String source,
        boolean truncated) {

    /** A pair that nothing cut. */
    public PreferenceSample(long[] promptIds, long[] chosenIds, long[] rejectedIds, Double margin, String source) {
        this(promptIds, chosenIds, rejectedIds, margin, source, false);
    }
}
