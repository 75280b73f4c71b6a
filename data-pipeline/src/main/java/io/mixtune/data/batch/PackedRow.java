package io.mixtune.data.batch;

/**
 * One row of a packed batch: several samples end to end, then padding.
 *
 * @param positionIds rotary positions, restarting at 0 at each sample
 * @param sampleIds which sample each token belongs to (0, 1, ... in the row; -1 for padding): attention stays inside
 *     a sample, which the model's AttentionMask builds from these
 * @param realTokens tokens that are not padding
 */
public record PackedRow(long[] inputIds, long[] labels, long[] positionIds, long[] sampleIds, int realTokens) {}
