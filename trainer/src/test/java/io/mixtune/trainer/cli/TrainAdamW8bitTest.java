package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.trainer.Training;
import io.mixtune.trainer.optim.AdamW8bit;
import io.mixtune.trainer.run.MetricsLog;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * train.optimizer: adamw_bnb_8bit end to end on the quickstart (tiny Mixtral, NF4; lm_head's LoRA of rank 64 has
 * arrays of 4096 elements and more, which take bitsandbytes' 8-bit blockwise moments, the rank-16 ones keep fp32
 * moments as bitsandbytes keeps them under min_8bit_size): four steps learn, a resume with another optimizer is refused,
 * and the run resumed from its step-2 checkpoint, its 8-bit state and step restored, retrains steps 3 and 4 to the
 * same figures and adapter bytes. In one JVM, and the resume in the run's own folder: a kill -9 mid-run is
 * RunSafetyTest's and TrainCommandTest's (KilledRun), the same checkpoint writing whatever the optimizer. The names
 * accepted and refused at their line: RecipeReaderTest. (Against adamw_torch over ten quickstart steps: README,
 * Training.)
 */
class TrainAdamW8bitTest {
    private static final Path QUICKSTART = Path.of("../recipes/quickstart.yaml");

    private static List<String> sets(Path out) {
        return List.of("data.files=[../data/samples/chats.jsonl]", "output_dir=" + out, "train.max_steps=4",
                "train.micro_batch_size=2", "data.max_seq_len=96", "train.eval_every=0", "train.save_every=2",
                "train.keep_last=10", "train.optimizer=adamw_bnb_8bit", "train.weight_decay=0.01");
    }

    /** Each step's loss, eval_loss and grad_norm, as "step name value" lines (the values' exact doubles). */
    private static List<String> figures(Path metrics) {
        List<String> lines = new ArrayList<>();
        for (JsonNode record : MetricsLog.read(metrics)) {
            for (String name : List.of("loss", "eval_loss", "grad_norm")) {
                if (record.has(name)) {
                    lines.add(record.get("step").asInt() + " " + name + " " + record.get(name).asDouble());
                }
            }
        }
        return lines;
    }

    @Test
    void learnsAndResumesToTheUninterruptedRun(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("out");
        String[] sets = sets(out).toArray(String[]::new);
        Training.load(QUICKSTART, sets).run();
        Path metrics = out.resolve("metrics.jsonl");
        List<Double> losses = TrainCommandTest.losses(metrics);
        double eval = MetricsLog.read(metrics).stream().filter(r -> r.has("eval_loss")).reduce((a, b) -> b)
                .orElseThrow().get("eval_loss").asDouble();
        System.out.printf(Locale.ROOT, "adamw_bnb_8bit losses %s, eval %.4f%n", losses, eval);
        assertEquals(4, losses.size());
        assertTrue(eval < losses.get(0), eval + " after " + losses);
        Path checkpoint = out.resolve("checkpoints/step-000002");
        assertTrue(Files.isRegularFile(checkpoint.resolve(AdamW8bit.STATE_FILE)));
        assertTrue(Files.isRegularFile(out.resolve("checkpoints/step-000004").resolve(AdamW8bit.STATE_FILE)));
        List<String> expected = figures(metrics);
        Path adapter = out.resolve("adapter/adapter_model.safetensors");
        byte[] expectedAdapter = Files.readAllBytes(adapter);

        List<String> changed = new ArrayList<>(List.of("train", "--recipe", QUICKSTART.toString()));
        for (String set : sets) {
            changed.addAll(List.of("--set", set));
        }
        changed.addAll(List.of("--resume", checkpoint.toString(), "--set", "train.optimizer=adamw_torch"));
        MixtuneCliTest.Result refused = MixtuneCliTest.run(changed.toArray(String[]::new));
        assertEquals(2, refused.code(), refused.out() + refused.err());
        assertTrue(refused.err().contains("train.optimizer: adamw_bnb_8bit -> adamw_torch"), refused.err());

        Training.load(QUICKSTART, sets).resume(checkpoint).run();
        assertEquals(expected, figures(metrics));
        assertArrayEquals(expectedAdapter, Files.readAllBytes(adapter), "adapter differs after resuming");
    }

    @Test
    void otherOptimizersAreRefusedByName() {
        MixtuneCliTest.Result lion = MixtuneCliTest.run("validate", "--recipe", QUICKSTART.toString(), "--set",
                "train.optimizer=lion_8bit");
        assertEquals(2, lion.code(), lion.out());
        assertTrue(lion.err().contains("train.optimizer") && lion.err().contains("adamw_bnb_8bit")
                && lion.err().contains("lion_8bit"), lion.err());
    }
}
