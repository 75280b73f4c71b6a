package io.mixtune.trainer.reward;

import io.mixtune.data.preference.PreferenceSample;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.stream.IntStream;

/**
 * Noisy preferences on purpose (reward.label_noise): chosen and rejected swapped in a seeded share of the training
 * pairs, as WARM (Ramé et al. 2024, section 5) corrupts its training labels to show that weight averaging holds up
 * where a single reward model memorises the flips. Every member of a WARM run draws the same flips from train.seed.
 */
public final class LabelNoise {
    private LabelNoise() {}

    /**
     * The pairs with round(share x pairs) of them flipped, chosen at random from {@code seed}: chosen and rejected
     * swapped, and the margin (score_chosen - score_rejected) negated with them. The list's order is kept.
     */
    public static List<PreferenceSample> flip(List<PreferenceSample> pairs, double share, long seed) {
        int count = (int) Math.round(share * pairs.size());
        if (count == 0) {
            return pairs;
        }
        List<Integer> order = new ArrayList<>(IntStream.range(0, pairs.size()).boxed().toList());
        Collections.shuffle(order, new Random(seed * 1_000_003L + 0x1AB3L));
        List<PreferenceSample> noisy = new ArrayList<>(pairs);
        for (int index : order.subList(0, count)) {
            PreferenceSample pair = pairs.get(index);
            noisy.set(index, new PreferenceSample(pair.promptIds(), pair.rejectedIds(), pair.chosenIds(),
                    pair.margin() == null ? null : -pair.margin(), pair.source(), pair.truncated()));
        }
        return noisy;
    }
}
