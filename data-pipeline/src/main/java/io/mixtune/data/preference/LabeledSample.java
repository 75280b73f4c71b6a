package io.mixtune.data.preference;

import java.util.List;

/**
 * A tokenized {@link LabeledCompletion}: the prompt and its completion (every token after the prompt: the answer, its
 * EOS or end marker and what the template writes after it, all of which KTO scores).
 *
 * @param completionIds the whole completion; a row cuts it ({@link #row})
 * @param truncated whether max_seq_len cuts the completion's end in its row
 */
public record LabeledSample(long[] promptIds, long[] completionIds, boolean label, String source,
        boolean truncated) {

    /**
     * A row as TRL 1.13's DataCollatorForUnpairedPreference makes it: prompt + completion, cut to its first
     * {@code maxLength} tokens.
     *
     * @return the row's ids; its first promptIds.length are the prompt
     */
    public long[] row(long[] completion, int maxLength) {
        int length = Math.min(maxLength, promptIds.length + completion.length);
        long[] row = java.util.Arrays.copyOf(promptIds, length);
        System.arraycopy(completion, 0, row, promptIds.length, length - promptIds.length);
        return row;
    }

    /**
     * The mismatched completion each example's KL term reads, as TRL 1.13's KTOTrainer pairs them
     * (_prepare_dataset's add_kl_completion_ids, a map batched by per_device_train_batch_size): within each block of
     * {@code batchSize} examples in order, example i takes the completion of example i - 1, the first the last's
     * (x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1}); a last, shorter block rotates within itself.
     *
     * @return per example, the completion ids its KL row appends to its prompt
     */
    public static long[][] klCompletions(List<LabeledSample> samples, int batchSize) {
        long[][] out = new long[samples.size()][];
        for (int from = 0; from < samples.size(); from += batchSize) {
            int to = Math.min(samples.size(), from + batchSize);
            for (int i = from; i < to; i++) {
                out[i] = samples.get(i == from ? to - 1 : i - 1).completionIds();
            }
        }
        return out;
    }
}
