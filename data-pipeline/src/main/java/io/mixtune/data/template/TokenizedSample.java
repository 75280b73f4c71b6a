package io.mixtune.data.template;

/**
 * A conversation as model input: token ids and, per token, the id to learn there or -100 (ignored by the loss, as in
 * PyTorch's cross-entropy). Labels are aligned with the inputs; the trainer shifts them by one.
 */
public record TokenizedSample(long[] inputIds, long[] labels, String source) {
    public static final long IGNORE = -100;

    public TokenizedSample {
        if (inputIds.length != labels.length) {
            throw new IllegalArgumentException("input_ids and labels differ in length");
        }
    }

    public int length() {
        return inputIds.length;
    }

    public int targetCount() {
        int count = 0;
        for (long label : labels) {
            if (label != IGNORE) {
                count++;
            }
        }
        return count;
    }
}
