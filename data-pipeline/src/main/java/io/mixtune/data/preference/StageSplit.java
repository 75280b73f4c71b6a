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
        double[] margins = new double[samples.size()];
        for (int i = 0; i < margins.length; i++) {
            PreferenceSample sample = samples.get(i);
            if (sample.margin() == null) {
                throw new IllegalArgumentException(sample.source() + ": splitting stages by score margin needs "
                        + "score_chosen and score_rejected in every pair");
            }
            margins[i] = sample.margin();
        }
        return byMargin(samples, margins, stages);
    }

    /**
     * Near-equal parts by the given margins (one per item, from wherever they come: the pairs' scores, a reward
     * model), largest first; equal margins keep the items' order (a stable sort).
     */
    public static <T> List<List<T>> byMargin(List<T> items, double[] margins, int stages) {
        if (margins.length != items.size()) {
            throw new IllegalArgumentException(margins.length + " margins for " + items.size() + " items");
        }
        List<Integer> order = new ArrayList<>();
        for (int i = 0; i < margins.length; i++) {
            order.add(i);
        }
        order.sort(Comparator.comparingDouble((Integer i) -> margins[i]).reversed());
        return byOrder(order.stream().map(items::get).toList(), stages);
    }

    private static void checkStages(int items, int stages) {
        if (stages < 1 || stages > items) {
            throw new IllegalArgumentException("cannot split " + items + " preference pairs into " + stages + " stages");
        }
    }
}
