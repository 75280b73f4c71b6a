package io.mixtune.data.batch;

/**
 * Samples padded on the right to the longest in the batch.
 *
 * @param attentionMask 1 for real tokens, 0 for padding (whose labels are ignored)
 */
public record PaddedBatch(long[][] inputIds, long[][] labels, long[][] positionIds, long[][] attentionMask) {}
