package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
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
 * and a run killed after a checkpoint resumes to the uninterrupted run, its 8-bit state saved and restored. (Against
 * adamw_torch over ten quickstart steps: README, Training.)
 */
class TrainAdamW8bitTest {
    private static final Path QUICKSTART = Path.of("../recipes/quickstart.yaml");

    private static List<String> train(Path dir, String optimizer) {
        List<String> args = new ArrayList<>(List.of("train", "--recipe", QUICKSTART.toString(), "--set",
                "data.files=[../data/samples/chats.jsonl]", "--set", "output_dir=" + dir.resolve("out")));
        for (String set : List.of("train.max_steps=4", "train.micro_batch_size=2", "data.max_seq_len=96",
                "train.eval_every=0", "train.save_every=2", "train.keep_last=10", "train.optimizer=" + optimizer,
                "train.weight_decay=0.01")) {
            args.addAll(List.of("--set", set));
        }
        return args;
    }

    @Test
    void learnsAndResumesToTheUninterruptedRun(@TempDir Path shared) throws Exception {
        Path whole = Files.createDirectories(shared.resolve("whole"));
        assertEquals(0, TrainCommandTest.mixtune(whole, train(whole, "adamw_bnb_8bit").toArray(String[]::new))
                .waitFor(), Files.readString(whole.resolve("log.txt")));
        List<Double> losses = TrainCommandTest.losses(whole.resolve("out/metrics.jsonl"));
        double eval = lastEval(whole.resolve("out/metrics.jsonl"));
        System.out.printf(Locale.ROOT, "adamw_bnb_8bit losses %s, eval %.4f%n", losses, eval);
        assertEquals(4, losses.size());
        assertTrue(eval < losses.get(0), eval + " after " + losses);
        assertTrue(Files.isRegularFile(whole.resolve("out/checkpoints/step-000004").resolve(AdamW8bit.STATE_FILE)));

        List<String> expected = new ArrayList<>();
        for (JsonNode record : MetricsLog.read(whole.resolve("out/metrics.jsonl"))) {
            for (String name : List.of("loss", "eval_loss", "grad_norm")) {
                if (record.has(name)) {
                    expected.add(record.get("step").asInt() + " " + name);
                }
            }
        }
        Path killed = Files.createDirectories(shared.resolve("killed"));
        KilledRun.resumesToTheUninterruptedRun("adamw_bnb_8bit", killed, train(killed, "adamw_bnb_8bit"),
                "step-000002", "train.optimizer=adamw_torch", "train.optimizer: adamw_bnb_8bit -> adamw_torch",
                expected, whole.resolve("out"), metrics -> {
                    List<String> lines = new ArrayList<>();
                    for (JsonNode record : MetricsLog.read(metrics)) {
                        for (String name : List.of("loss", "eval_loss", "grad_norm")) {
                            if (record.has(name)) {
                                lines.add(record.get("step").asInt() + " " + name);
                            }
                        }
                    }
                    return lines;
                });
    }

    @Test
    void otherOptimizersAreRefusedByName() {
        MixtuneCliTest.Result lion = MixtuneCliTest.run("validate", "--recipe", QUICKSTART.toString(), "--set",
                "train.optimizer=lion_8bit");
        assertEquals(2, lion.code(), lion.out());
        assertTrue(lion.err().contains("train.optimizer") && lion.err().contains("adamw_bnb_8bit")
                && lion.err().contains("lion_8bit"), lion.err());
        MixtuneCliTest.Result optim = MixtuneCliTest.run("validate", "--recipe", QUICKSTART.toString(), "--set",
                "train.optim=adamw_bnb_8bit");
        assertEquals(2, optim.code(), optim.out());
        assertTrue(optim.err().contains("transformers' optim is train.optimizer"), optim.err());
        for (String name : List.of("adamw_torch", "adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit")) {
            MixtuneCliTest.Result ok = MixtuneCliTest.run("validate", "--recipe", QUICKSTART.toString(), "--set",
                    "train.optimizer=" + name);
            assertEquals(0, ok.code(), ok.err());
        }
    }

    private static double lastEval(Path metrics) {
        return MetricsLog.read(metrics).stream().filter(r -> r.has("eval_loss")).reduce((a, b) -> b).orElseThrow()
                .get("eval_loss").asDouble();
    }
}
