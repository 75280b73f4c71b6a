package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * data.packing_strategy bfd packs best fit as TRL since 2026-12-08; a run recorded before (its recipe.yaml without
 * data.packing_fit) packed first fit and resumes so, to the losses it would have had, while the same recipe started
 * anew packs best fit (other rows, other losses); best_fit set by name on such a resume is refused as a changed key.
 */
class PackingFitResumeTest {
    @TempDir
    Path dir;

    /**
     * 16 texts whose lengths (BOS + "the" x n + EOS) repeat [7, 5, 4, 1]'s pattern at rows of 64 (42: a row; 30 and 24:
     * another, fuller; 6: first fit beside the 42, best fit beside the 30 and 24): the two fits give other rows.
     */
    private static Path recipe(Path dir) throws Exception {
        StringBuilder lines = new StringBuilder();
        for (int length : new int[] {42, 30, 24, 6, 44, 28, 22, 8, 40, 31, 25, 7, 43, 29, 23, 5}) {
            lines.append("{\"text\": \"").append("the ".repeat(length - 2).strip()).append("\"}\n");
        }
        Path data = Files.writeString(dir.resolve("texts.jsonl"), lines);
        return Files.writeString(dir.resolve("recipe.yaml"), """
                model:
                  preset: tiny-mixtral
                lora:
                  r: 4
                  alpha: 8
                  targets: [q_proj, v_proj, w1, lm_head]
                data:
                  files: [%s]
                  max_seq_len: 64
                train:
                  max_steps: 4
                  micro_batch_size: 2
                  lr: 3.0e-3
                  save_every: 2
                output_dir: %s
                """.formatted(data, dir.resolve("out")));
    }

    private static MixtuneCliTest.Result train(Path recipe, String... more) {
        List<String> args = new ArrayList<>(List.of("train", "--recipe", recipe.toString()));
        args.addAll(List.of(more));
        return MixtuneCliTest.run(args.toArray(String[]::new));
    }

    @Test
    void aRunRecordedBeforeBestFitResumesFirstFit() throws Exception {
        Path bestDir = Files.createDirectories(dir.resolve("best"));
        MixtuneCliTest.Result best = train(recipe(bestDir));
        assertEquals(0, best.code(), best.err());
        assertTrue(Files.readString(bestDir.resolve("out/recipe.yaml")).contains("packing_fit: best_fit"));
        List<Double> bestLosses = TrainCommandTest.losses(bestDir.resolve("out/metrics.jsonl"));

        Path older = Files.createDirectories(dir.resolve("older"));
        Path recipe = recipe(older);
        MixtuneCliTest.Result first = train(recipe, "--set", "data.packing_fit=first_fit");
        assertEquals(0, first.code(), first.err());
        Path metrics = older.resolve("out/metrics.jsonl");
        List<Double> firstLosses = TrainCommandTest.losses(metrics);
        assertEquals(4, firstLosses.size());
        assertNotEquals(bestLosses, firstLosses, "the two fits pack other rows");

        // as an older mixtune left the run: its recipe.yaml without the key
        Path recorded = older.resolve("out/recipe.yaml");
        String withoutKey = Files.readAllLines(recorded).stream().filter(line -> !line.contains("packing_fit"))
                .collect(Collectors.joining("\n", "", "\n"));
        Files.writeString(recorded, withoutKey);
        // best_fit asked for by name is a change of the run's rows, refused as --resume refuses one (not overridden)
        String step2 = older.resolve("out/checkpoints/step-000002").toString();
        MixtuneCliTest.Result asked = train(recipe, "--resume", step2, "--set", "data.packing_fit=best_fit");
        assertEquals(2, asked.code(), asked.out() + asked.err());
        assertTrue(asked.err().contains("data.packing_fit: (not set, first_fit as the run packed) -> best_fit"),
                asked.err());
        assertEquals(firstLosses, TrainCommandTest.losses(metrics), "the refused resume trained nothing");
        MixtuneCliTest.Result resumed = train(recipe, "--resume", step2);
        assertEquals(0, resumed.code(), resumed.err());
        assertTrue(resumed.out().contains("it resumes first_fit, as it ran"), resumed.out());
        assertEquals(firstLosses, TrainCommandTest.losses(metrics), "steps 3 and 4 as the first-fit run's");
        assertFalse(Files.readString(recorded).contains("packing_fit"), "the run's record stays as it was");
    }
}
