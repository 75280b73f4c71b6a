package io.mixtune.data.preference;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Stage-DPO's stages: the preference data split into N parts, each trained against the policy the stage before it
 * produced. By file order, or by score margin when every pair has scores: the first stage takes the largest margins
 * (the clearest preferences), the last the smallest, an easy-to-hard curriculum.
 */
public final class StageSplit {
    private StageSplit() {}

    /** Contiguous, near-equal parts in file order. */
    public static <T> List<List<T>> byOrder(List<T> items, int stages) {
        checkStages(items.size(), stages);
        List<List<T>> parts = new ArrayList<>();
        for (int s = 0; s < stages; s++) {
            parts.add(items.subList((int) ((long) items.size() * s / stages), (int) ((long) items.size() * (s + 1) / stages)));
        }
        return parts;
    }

    /** Near-equal parts by margin, largest first; equal margins keep file order. */
    public static List<List<PreferenceSample>> byMargin(List<PreferenceSample> samples, int stages) {
        for (PreferenceSample sample : samples) {
            if (sample.margin() == null) {
                throw new IllegalArgumentException(sample.source() + ": splitting stages by score margin needs "
                        + "score_chosen and score_rejected in every pair");
            }
        }
        List<PreferenceSample> sorted = new ArrayList<>(samples);
        sorted.sort(Comparator.comparingDouble((PreferenceSample s) -> s.margin()).reversed());
        return byOrder(sorted, stages);
    }

    private static void checkStages(int items, int stages) {
        if (stages < 1 || stages > items) {
            throw new IllegalArgumentException("cannot split " + items + " preference pairs into " + stages + " stages");
        }
    }
}
