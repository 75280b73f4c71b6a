package io.mixtune.trainer.grpo;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/**
 * One generation batch: per prompt num_generations sampled completions, their advantages and what the loss reads
 * besides the policy, fixed when they were sampled (TRL's buffered inputs). Rows are completions, a prompt's group
 * consecutive; {@code order} is the shuffled row order the step's micro-batches take in turn (TRL shuffles the batch
 * before splitting it).
 *
 * @param generation which generation batch of the run (a step's index / num_iterations)
 * @param promptIndex each row's prompt, an index into the data set
 * @param completions each row's sampled token ids, EOS included where it stopped there
 * @param counted whether each row counts in the loss (false: truncated, with mask_truncated_completions)
 * @param advantages each row's advantage
 * @param old each row's per-token log-probs of the sampling policy, null unless num_iterations > 1
 * @param reference each row's per-token log-probs of the reference, null with beta 0
 * @param metrics TRL's generation metrics (completions/*, rewards/*, reward, reward_std, frac_reward_zero_std)
 * @param tokens prompt and completion tokens of all rows (TRL's num_input_tokens_seen grows by them)
 * @param countedTokens completion tokens that count in the loss (TRL's num_items_in_batch)
 */
record Rollouts(long generation, int[] promptIndex, long[][] completions, boolean[] counted, float[] advantages,
        int[] order, float[][] old, float[][] reference, Map<String, Double> metrics, long tokens,
        long countedTokens) {

    static final String FILE = "grpo_rollouts.json";
    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * Writes them into a checkpoint being staged (renamed whole when complete): num_iterations > 1 trains on them
     * again after a resume.
     */
    void save(Path checkpointDir) {
        try {
            Files.write(checkpointDir.resolve(FILE), JSON.writeValueAsBytes(this));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** What {@link #save} wrote, bit for bit (floats print as their shortest exact form); null where none. */
    static Rollouts read(Path checkpointDir) {
        Path file = checkpointDir.resolve(FILE);
        if (!Files.isRegularFile(file)) {
            return null;
        }
        try {
            return JSON.readValue(file.toFile(), new TypeReference<Rollouts>() {});
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": " + e.getMessage(), e);
        }
    }
}
