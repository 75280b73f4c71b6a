package io.mixtune.trainer.reward;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.trainer.Training;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.IntStream;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** reward.label_noise: exactly round(share x pairs) training pairs swapped, the same for a seed, validation never. */
class LabelNoiseTest {
    private static List<PreferenceSample> pairs(int n) {
        return IntStream.range(0, n).mapToObj(i -> new PreferenceSample(new long[] {1, i}, new long[] {10 + i},
                new long[] {20 + i, 2}, i % 2 == 0 ? null : (double) i, "pairs.jsonl:" + (i + 1))).toList();
    }

    /** The indices of the pairs whose answers were swapped, each checked to be exactly a swap. */
    private static Set<Integer> flipped(List<PreferenceSample> before, List<PreferenceSample> after) {
        assertEquals(before.size(), after.size());
        Set<Integer> flipped = new TreeSet<>();
        for (int i = 0; i < before.size(); i++) {
            PreferenceSample was = before.get(i);
            PreferenceSample is = after.get(i);
            assertSame(was.promptIds(), is.promptIds());
            assertEquals(was.source(), is.source());
            if (is == was) {
                continue;
            }
            flipped.add(i);
            assertArrayEquals(was.rejectedIds(), is.chosenIds());
            assertArrayEquals(was.chosenIds(), is.rejectedIds());
            assertEquals(was.margin() == null ? null : -was.margin(), is.margin());
        }
        return flipped;
    }

    @Test
    void exactlyTheRoundedShareOfPairsIsSwapped() {
        List<PreferenceSample> ten = pairs(10);
        assertEquals(3, flipped(ten, LabelNoise.flip(ten, 0.25, 42)).size(), "round(2.5) = 3");
        assertEquals(3, flipped(ten, LabelNoise.flip(ten, 0.3, 42)).size());
        assertEquals(10, flipped(ten, LabelNoise.flip(ten, 1.0, 42)).size());
        assertSame(ten, LabelNoise.flip(ten, 0.0, 42));
        assertSame(ten, LabelNoise.flip(ten, 0.04, 42), "round(0.4) = 0");
        List<PreferenceSample> bundled = pairs(176);
        assertEquals(44, flipped(bundled, LabelNoise.flip(bundled, 0.25, 42)).size());
    }

    @Test
    void theSameSeedSwapsTheSamePairs() {
        List<PreferenceSample> all = pairs(176);
        Set<Integer> once = flipped(all, LabelNoise.flip(all, 0.25, 42));
        assertEquals(once, flipped(all, LabelNoise.flip(all, 0.25, 42)));
        assertNotEquals(once, flipped(all, LabelNoise.flip(all, 0.25, 43)));
    }

    /**
     * label_noise 1 swaps every training pair: the first step sees the same pairs in the same order with their roles
     * swapped, so its margin is the clean run's negated; the validation before it is untouched.
     */
    @Test
    void trainingPairsAreSwappedAndValidationPairsNever(@TempDir Path dir) throws Exception {
        Path pairs = dir.resolve("pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(pairs, lines.limit(12).toList());
        }
        List<String> notes = new ArrayList<>();
        TrainingResult clean = run(dir.resolve("clean"), pairs, "0.0", notes);
        TrainingResult noisy = run(dir.resolve("noisy"), pairs, "1.0", notes);
        // ceil(0.34 x 12) = 5 validation pairs, as datasets' train_test_split holds out
        assertTrue(notes.stream().anyMatch(n -> n.startsWith("label noise: chosen and rejected swapped in 7 of 7 "
                + "training pairs")), notes.toString());
        assertEquals(clean.lastStage().firstEvaluation(), noisy.lastStage().firstEvaluation(),
                "the 5 validation pairs are never swapped");
        assertEquals(-clean.lastStage().metric("margin"), noisy.lastStage().metric("margin"), 1e-5);
        assertEquals(1 - clean.lastStage().metric("accuracy"), noisy.lastStage().metric("accuracy"), 1e-9);
    }

    private static TrainingResult run(Path out, Path pairs, String noise, List<String> notes) {
        return Training.load(Path.of("../recipes/quickstart-reward.yaml"), "data.files=[" + pairs + "]",
                "data.validation_ratio=0.34", "data.max_seq_len=384", "train.max_steps=1", "train.micro_batch_size=4",
                "reward.label_noise=" + noise, "output_dir=" + out).listener(new TrainingListener() {
                    @Override
                    public void onNote(String line) {
                        notes.add(line);
                    }
                }).run();
    }
}
