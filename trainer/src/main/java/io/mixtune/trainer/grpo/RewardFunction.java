package io.mixtune.trainer.grpo;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.List;
import java.util.Map;

/**
 * A GRPO reward function, as TRL's GRPOTrainer calls one: every completion of a generation batch with its prompt and
 * the other fields of its record, one score per completion back, in order. A null score is TRL's None: this function
 * does not score that completion (it counts as 0 in the weighted sum of the functions, and a completion no function
 * scores is left out of the advantages' means and of the reward metrics).
 */
@FunctionalInterface
public interface RewardFunction {

    /** One score per completion of {@code batch}, in order; null where this function gives none. */
    List<Double> score(Batch batch);

    /**
     * What TRL hands a reward function, one entry per completion (a prompt repeated num_generations times).
     *
     * @param prompts each completion's prompt as its record holds it: a string, or a list of messages
     * @param completions each completion's text, special tokens left out (TRL's batch_decode with skip_special_tokens;
     *     TRL wraps a conversational completion as [{"role": "assistant", "content": text}], here it is the text)
     * @param completionIds each completion's token ids, its EOS included when it has one
     * @param promptIds each completion's prompt's token ids, as the policy was prompted (TRL passes none; a reward
     *     model of the same base scores prompt + completion ids)
     * @param columns every other field of the records (TRL's reward kwargs), by name: one value per completion
     */
    record Batch(List<JsonNode> prompts, List<String> completions, List<long[]> completionIds,
            List<long[]> promptIds, Map<String, List<JsonNode>> columns) {
        public int size() {
            return completions.size();
        }
    }
}
