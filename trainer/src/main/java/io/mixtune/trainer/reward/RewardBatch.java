package io.mixtune.trainer.reward;

import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.trainer.dpo.PreferenceBatch;
import java.util.List;

/**
 * A micro-batch of preference pairs laid out as TRL's reward collator does (chosen rows, then rejected rows, right
 * padded with the pad id: {@link PreferenceBatch}), where each row's reward is read, and the pairs' margins.
 *
 * @param positions per row, the position of its last non-pad token ({@link RewardHead#lastNonPadTokens})
 * @param margins per pair, score_chosen - score_rejected, or null when the loss takes no margin
 */
public record RewardBatch(PreferenceBatch pairs, long[] positions, float[] margins) {

    /** @param withMargins take each pair's margin (every pair must carry scores) */
    public static RewardBatch of(List<PreferenceSample> samples, int[] indices, long padId, boolean withMargins) {
        PreferenceBatch pairs = PreferenceBatch.of(samples, indices, padId);
        float[] margins = null;
        if (withMargins) {
            margins = new float[samples.size()];
            for (int i = 0; i < margins.length; i++) {
                Double margin = samples.get(i).margin();
                if (margin == null) {
                    throw new IllegalArgumentException(samples.get(i).source() + ": reward.margin is true but this "
                            + "pair has no score_chosen and score_rejected");
                }
                margins[i] = margin.floatValue();
            }
        }
        return new RewardBatch(pairs, RewardHead.lastNonPadTokens(pairs.rows().inputIds(), padId), margins);
    }

    public int pairCount() {
        return pairs.pairs();
    }
}
