package io.mixtune.data.preference;

/**
 * A tokenized preference pair: the shared prompt once, and each completion (the answer's tokens and its closing EOS,
 * all of which carry the DPO log-probability).
 *
 * @param margin score_chosen - score_rejected, or null without scores
 */
public record PreferenceSample(long[] promptIds, long[] chosenIds, long[] rejectedIds, Double margin, String source) {}
