package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.trainer.run.MetricsLog;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The recipe's averaging section on a real run: EMA, SWA and LaWA adapters equal the published formulas applied to
 * the weights the run saved after every step, their eval losses sit beside the raw one, and SWALR sets the learning
 * rate of the SWA phase.
 */
class TrainAveragingTest {
    @TempDir
    static Path dir;

    @Test
    void averagedAdaptersEqualTheFormulasOverTheRunsWeights() throws Exception {
        // A checkpoint after every step keeps the raw weights of each step (trainer_state.safetensors, parameter.i).
        MixtuneCliTest.Result run = MixtuneCliTest.run("train", "--recipe", TrainCommandTest.recipe(dir).toString(),
                "--set", "train.save_every=1", "--set", "train.keep_last=12", "--set", "averaging.swa_lr=1.0e-3",
                "--set", "averaging.swa_anneal_steps=3");
        assertEquals(0, run.code(), run.err());
        Path out = dir.resolve("out");
        List<List<float[]>> weights = new ArrayList<>(); // weights.get(s - 1): the arrays after step s
        int arrays = -1;
        for (int step = 1; step <= 12; step++) {
            try (SafetensorsReader state = SafetensorsReader.open(
                    out.resolve(String.format("checkpoints/step-%06d/trainer_state.safetensors", step)))) {
                if (arrays < 0) {
                    arrays = (int) state.names().stream().filter(n -> n.startsWith("parameter.")).count();
                }
                List<float[]> afterStep = new ArrayList<>();
                for (int i = 0; i < arrays; i++) {
                    afterStep.add(state.readFloats("parameter." + i));
                }
                weights.add(afterStep);
            }
        }
        // EMA (decay 0.9, timm: the first step only copies), SWA from floor(0.5 x 12) = 6 every 2 steps, LaWA of the
        // latest 3 snapshots taken every 2 steps; in double.
        List<double[]> ema = new ArrayList<>();
        for (int i = 0; i < arrays; i++) {
            double[] e = new double[weights.get(0).get(i).length];
            for (int step = 1; step <= 12; step++) {
                double decay = step == 1 ? 0 : 0.9;
                float[] w = weights.get(step - 1).get(i);
                for (int k = 0; k < e.length; k++) {
                    e[k] = decay * e[k] + (1 - decay) * w[k];
                }
            }
            ema.add(e);
        }
        assertAdapterEquals(out.resolve("adapter-ema"), ema, 1e-6);
        assertAdapterEquals(out.resolve("adapter-swa"), mean(weights, arrays, 6, 8, 10, 12), 1e-6);
        assertAdapterEquals(out.resolve("adapter-lawa"), mean(weights, arrays, 8, 10, 12), 1e-6);

        List<JsonNode> records = MetricsLog.read(out.resolve("metrics.jsonl"));
        JsonNode lastEval = records.stream().filter(r -> r.has("eval_loss") && r.get("step").asInt() == 12)
                .findFirst().orElseThrow();
        for (String name : List.of("ema", "swa", "lawa")) {
            assertTrue(lastEval.has("eval_loss_" + name), lastEval.toString());
            assertTrue(Double.isFinite(lastEval.get("eval_loss_" + name).asDouble()));
        }
        // SWALR from step 6: anneal (cos) from the schedule's rate at step 6 to 1e-3 over 3 steps, then hold.
        List<Double> lr = new ArrayList<>();
        records.stream().filter(r -> r.has("lr")).forEach(r -> lr.add(r.get("lr").asDouble()));
        double atStart = lr.get(5);
        for (int update = 6; update <= 12; update++) {
            double t = Math.min(1, (update - 6) / 3.0);
            double alpha = (1 - Math.cos(Math.PI * t)) / 2;
            assertEquals(1e-3 * alpha + atStart * (1 - alpha), lr.get(update - 1), 1e-12, "lr of step " + update);
        }
        assertEquals(1e-3, lr.get(11), 1e-15);
    }

    /** A run shorter than its averages' start says so at its start, and writes only the averages it reached. */
    @Test
    void averagesTheRunNeverReachesAreNamedAndNotWritten(@TempDir Path own) throws Exception {
        MixtuneCliTest.Result run = MixtuneCliTest.run("train", "--recipe", TrainCommandTest.recipe(own).toString(),
                "--set", "train.max_steps=2", "--set", "averaging.swa_start=3", "--set", "averaging.lawa_every=3");
        assertEquals(0, run.code(), run.err());
        String output = run.out() + run.err();
        assertTrue(output.contains("averaging.swa_start 3 first averages step 3, after the last of these 2 steps: no"
                + " SWA average is kept and no adapter-swa written"), output);
        assertTrue(output.contains("averaging.lawa_every 3 is more than these 2 steps"), output);
        Path out = own.resolve("out");
        assertTrue(Files.isDirectory(out.resolve("adapter-ema")), "EMA is reached");
        assertFalse(Files.exists(out.resolve("adapter-swa")));
        assertFalse(Files.exists(out.resolve("adapter-lawa")));
    }

    private static List<double[]> mean(List<List<float[]>> weights, int arrays, int... steps) {
        List<double[]> mean = new ArrayList<>();
        for (int i = 0; i < arrays; i++) {
            double[] m = new double[weights.get(0).get(i).length];
            for (int step : steps) {
                float[] w = weights.get(step - 1).get(i);
                for (int k = 0; k < m.length; k++) {
                    m[k] += w[k] / (double) steps.length;
                }
            }
            mean.add(m);
        }
        return mean;
    }

    /** The adapter's arrays, in the checkpoint's parameter order (module order, A then B), against the expected. */
    private static void assertAdapterEquals(Path adapter, List<double[]> expected, double tolerance) {
        try (SafetensorsReader reader = SafetensorsReader.open(adapter.resolve("adapter_model.safetensors"))) {
            List<float[]> actual = new ArrayList<>();
            for (String name : reader.names()) {
                actual.add(reader.readFloats(name));
            }
            assertEquals(expected.size(), actual.size(), adapter + ": arrays");
            // The safetensors names sort differently from the parameter order: match arrays by content instead.
            for (double[] want : expected) {
                boolean found = false;
                for (float[] got : actual) {
                    if (got.length == want.length && maxDiff(got, want) <= tolerance) {
                        found = true;
                        break;
                    }
                }
                assertTrue(found, adapter + ": no array equals the expected average");
            }
        }
    }

    private static double maxDiff(float[] a, double[] b) {
        double worst = 0;
        for (int k = 0; k < a.length; k++) {
            worst = Math.max(worst, Math.abs(a[k] - b[k]));
        }
        return worst;
    }
}
