package io.mixtune.merging.averaging;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * The in-training averagers: hand-computed values, timm ModelEmaV3's decay warmup, and torch.optim.swa_utils itself
 * (AveragedModel's SWA and EMA, SWALR) through the committed golden averaging.json.
 */
class AveragersTest {
    private static final double EPS = 1e-12;

    private static Map<String, float[]> weights(float... values) {
        Map<String, float[]> weights = new LinkedHashMap<>();
        weights.put("lora_A", values.clone());
        return weights;
    }

    private static float value(Map<String, float[]> weights) {
        return weights.get("lora_A")[0];
    }

    @Test
    void emaDecayFollowsTimmsModelEmaV3() {
        EmaAverager constant = new EmaAverager(EmaAverager.Config.constant(0.99), weights(0));
        assertEquals(0, constant.decayAt(0));
        assertEquals(0, constant.decayAt(1), "the first optimizer step only copies");
        assertEquals(0.99, constant.decayAt(2));
        EmaAverager warm = new EmaAverager(EmaAverager.Config.warmingUp(0.9999, 2.0 / 3.0), weights(0));
        assertEquals(1 - Math.pow(2, -2.0 / 3.0), warm.decayAt(2), EPS);
        assertEquals(1 - Math.pow(9, -2.0 / 3.0), warm.decayAt(9), EPS);
        assertEquals(0.9999, warm.decayAt(100_000_000), "capped at decay");
        EmaAverager late = new EmaAverager(new EmaAverager.Config(0.999, true, 10, 0.75, 3, 0.5), weights(0));
        assertEquals(0, late.decayAt(4), "update_after_step 3: steps up to 4 copy");
        assertEquals(0.5, late.decayAt(5), "1 - 1.1^-0.75 = 0.069 floored at min_decay 0.5");
        assertEquals(1 - Math.pow(1 + 96 / 10.0, -0.75), late.decayAt(100), EPS);
        // timm takes a min_decay above decay: with warmup it wins, max(min(warm, decay), min_decay); without, unused.
        assertEquals(0.95, new EmaAverager.Config(0.9, true, 1, 2.0 / 3.0, 0, 0.95).decayAt(50));
        assertEquals(0.9, new EmaAverager.Config(0.9, false, 1, 2.0 / 3.0, 0, 0.95).decayAt(50));
        assertThrows(IllegalArgumentException.class, () -> new EmaAverager.Config(0.9, true, 1, 1, 0, 1.0));
    }

    @Test
    void emaStartsAsACopyAndMovesByOneMinusDecay() {
        EmaAverager ema = new EmaAverager(EmaAverager.Config.constant(0.5), weights(1));
        assertEquals(1, value(ema.averaged()));
        ema.update(5, weights(3));
        assertEquals(2, value(ema.averaged()));
        ema.update(6, weights(4));
        assertEquals(3, value(ema.averaged()));
        ema.update(1, weights(10));
        assertEquals(10, value(ema.averaged()), "step 1 copies (timm: decay 0 before update_after_step + 2)");
        IllegalArgumentException renamed = assertThrows(IllegalArgumentException.class,
                () -> ema.update(7, Map.of("lora_B", new float[] {1})));
        assertTrue(renamed.getMessage().contains("changed names"), renamed.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new EmaAverager.Config(1.0, false, 1, 1, 0, 0));
    }

    @Test
    void swaAveragesEveryKStepsFromTheStart() {
        SwaAverager swa = new SwaAverager(new SwaAverager.Config(10, 5));
        assertThrows(IllegalStateException.class, swa::averaged);
        for (int step = 0; step <= 22; step++) {
            assertEquals(step >= 10 && step % 5 == 0, swa.update(step, weights(step)));
        }
        assertEquals(3, swa.count());
        assertEquals(15, value(swa.averaged()), "mean of steps 10, 15, 20");
        assertEquals(750, SwaAverager.Config.of(0.75, 5, 1000).startStep(), "a fraction of the run");
        assertEquals(200, SwaAverager.Config.of(200, 5, 1000).startStep(), "a step");
        assertThrows(IllegalArgumentException.class, () -> SwaAverager.Config.of(1.5, 5, 1000));
    }

    /** Steps count from 1: from start 0, every 2, steps 2, 4, 6 are averaged, so a restore after step 6 holds 3. */
    @Test
    void swaFromTheStartRestoresTheCountOfItsAveragedSteps() {
        SwaAverager.Config config = SwaAverager.Config.of(0.0, 2, 100);
        SwaAverager swa = new SwaAverager(config);
        for (int step = 1; step <= 6; step++) {
            swa.update(step, weights(step));
        }
        assertEquals(3, swa.count());
        assertEquals(3, config.countAfter(6));
        assertEquals(7, new SwaAverager.Config(0, 1).countAfter(7), "every step from the first");
        assertEquals(3, new SwaAverager.Config(10, 5).countAfter(22), "steps 10, 15, 20");
        SwaAverager resumed = new SwaAverager(config);
        resumed.restore(6, swa.averaged());
        resumed.update(8, weights(8));
        swa.update(8, weights(8));
        assertEquals(value(swa.averaged()), value(resumed.averaged()), "(2 + 4 + 6 + 8) / 4 either way");
        assertEquals(5, value(resumed.averaged()));
    }

    @Test
    void lawaAveragesOnlyTheLatestK() {
        LawaAverager lawa = new LawaAverager(new LawaAverager.Config(2, 10));
        assertTrue(lawa.update(10, weights(1)));
        assertFalse(lawa.update(15, weights(100)));
        lawa.update(20, weights(3));
        lawa.update(30, weights(7));
        assertEquals(2, lawa.count());
        assertEquals(5, value(lawa.averaged()), "(3 + 7) / 2: step 10 has left the window");
    }

    @Test
    void swaLearningRateAnnealsToSwaLr() {
        SwaLearningRate cos = new SwaLearningRate(0.1, 0.01, 4, SwaLearningRate.Anneal.COS);
        assertEquals(0.1, cos.at(0), EPS);
        assertEquals(0.055, cos.at(2), EPS, "halfway the cosine weight is 1/2");
        assertEquals(0.01, cos.at(4), EPS);
        assertEquals(0.01, cos.at(40), EPS);
        assertEquals(0.0775, new SwaLearningRate(0.1, 0.01, 4, SwaLearningRate.Anneal.LINEAR).at(1), EPS);
        assertEquals(0.01, new SwaLearningRate(0.1, 0.01, 0, SwaLearningRate.Anneal.parse("cos")).at(0), EPS);
    }

    @Test
    void matchesTorchSwaUtils() throws IOException {
        JsonNode golden = new ObjectMapper().readTree(Path.of("src/test/resources/golden/averaging.json").toFile());
        JsonNode snapshots = golden.get("snapshots");
        SwaAverager swa = new SwaAverager(new SwaAverager.Config(0, 1));
        EmaAverager ema = null;
        for (int i = 0; i < snapshots.size(); i++) {
            Map<String, float[]> w = Map.of("weight", floats(snapshots.get(i)));
            swa.update(i, w);
            // AveragedModel copies on its first update; EmaAverager starts as that copy and decays from step 2 on.
            if (ema == null) {
                ema = new EmaAverager(EmaAverager.Config.constant(golden.get("ema_decay").asDouble()), w);
            } else {
                ema.update(i + 1, w);
            }
            assertArrayEquals(floats(golden.get("swa").get(i)), swa.averaged().get("weight"), 1e-6f, "swa after " + i);
            assertArrayEquals(floats(golden.get("ema").get(i)), ema.averaged().get("weight"), 1e-6f, "ema after " + i);
        }
        for (JsonNode schedule : golden.get("swalr")) {
            SwaLearningRate lr = new SwaLearningRate(schedule.get("lr").asDouble(), schedule.get("swa_lr").asDouble(),
                    schedule.get("anneal_steps").asLong(), SwaLearningRate.Anneal.parse(schedule.get("strategy").asText()));
            for (int k = 0; k < schedule.get("lrs").size(); k++) {
                assertEquals(schedule.get("lrs").get(k).asDouble(), lr.at(k), 1e-12,
                        schedule.get("strategy").asText() + " step " + k);
            }
        }
    }

    private static float[] floats(JsonNode array) {
        float[] out = new float[array.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = (float) array.get(i).asDouble();
        }
        return out;
    }
}
