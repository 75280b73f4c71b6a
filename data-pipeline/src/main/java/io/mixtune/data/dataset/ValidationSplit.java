package io.mixtune.data.dataset;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;

/**
 * A validation set held out of the training data: a seeded random {@code ratio} of the items, each side keeping file
 * order. Chats and preference pairs are split the same way. The size is ceil(ratio x n) in doubles, as Hugging Face
 * datasets' train_test_split takes a float test_size (so axolotl's val_set_size and TRL users' splits hold out as
 * many items).
 *
 * @param train the items kept for training
 * @param validation the items held out
 */
public record ValidationSplit<T>(List<T> train, List<T> validation) {

    public static <T> ValidationSplit<T> of(List<T> items, double ratio, long seed) {
        if (!(ratio >= 0 && ratio < 1)) {
            throw new IllegalArgumentException("validation ratio must lie in [0, 1), got " + ratio);
        }
        int validationSize = (int) Math.ceil(items.size() * ratio);
        if (validationSize == 0) {
            return new ValidationSplit<>(items, List.of());
        }
        List<Integer> order = new ArrayList<>();
        for (int i = 0; i < items.size(); i++) {
            order.add(i);
        }
        Collections.shuffle(order, new Random(seed));
        boolean[] isValidation = new boolean[items.size()];
        for (int i = 0; i < validationSize; i++) {
            isValidation[order.get(i)] = true;
        }
        List<T> kept = new ArrayList<>();
        List<T> validation = new ArrayList<>();
        for (int i = 0; i < items.size(); i++) {
            (isValidation[i] ? validation : kept).add(items.get(i));
        }
        return new ValidationSplit<>(kept, validation);
    }
}
