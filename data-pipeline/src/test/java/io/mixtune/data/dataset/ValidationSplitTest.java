package io.mixtune.data.dataset;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.List;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;

/** The validation set's size is Hugging Face datasets' train_test_split's for a float test_size. */
class ValidationSplitTest {

    @Test
    void theValidationSizeIsTheCeilingAsInHuggingFaceDatasets() {
        // {n, ratio, held out}: len(test) of Dataset.from_dict({"x": range(n)}).train_test_split(test_size=ratio),
        // datasets 5.0.1, which takes ceil(test_size * n_samples); 100 x 0.07 is 7.000000000000001 in doubles, so 8
        Object[][] cases = {{4, 0.1, 1}, {21, 0.25, 6}, {7, 0.3, 3}, {200, 0.1, 20}, {10, 0.05, 1}, {3, 0.1, 1},
            {196, 0.1, 20}, {100, 0.07, 8}, {9, 0.34, 4}, {30, 0.0, 0}};
        for (Object[] c : cases) {
            int n = (int) c[0];
            double ratio = (double) c[1];
            List<Integer> items = IntStream.range(0, n).boxed().toList();
            ValidationSplit<Integer> split = ValidationSplit.of(items, ratio, 42);
            assertEquals((int) c[2], split.validation().size(), n + " x " + ratio);
            List<Integer> all = new ArrayList<>(split.train());
            all.addAll(split.validation());
            assertEquals(n, all.size());
            assertEquals(items, all.stream().sorted().toList(), "every item on exactly one side");
        }
    }
}
