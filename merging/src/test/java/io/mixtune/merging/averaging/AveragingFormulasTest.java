package io.mixtune.merging.averaging;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The averagers' libtorch formulas (which a run applies on its device, and these Java-array averagers on the host)
 * give, bit for bit, what the formulas written in Java float math give, as the averagers computed them before they
 * moved to libtorch: EMA's {@code (float) (decay * ema + (1 - decay) * w)}, SWA's float
 * {@code avg += (w - avg) / (n + 1)}, LaWA's mean summed in double. Weights of mixed magnitudes make every rounding
 * visible: a float32 EMA, or one with a fused multiply-add, differs in the last bit within two steps.
 */
class AveragingFormulasTest {
    private static final int SIZE = 500;
    private static final int STEPS = 12;

    @Test
    void emaEqualsJavaDoubleMathRoundedToFloat() {
        for (EmaAverager.Config config : List.of(EmaAverager.Config.constant(0.999),
                EmaAverager.Config.warmingUp(0.9999, 2.0 / 3.0), new EmaAverager.Config(0.999, true, 10, 0.75, 3,
                        0.5))) {
            Random random = new Random(7);
            float[] expected = mixedMagnitudes(random);
            EmaAverager ema = new EmaAverager(config, Map.of("w", expected.clone()));
            for (long step = 1; step <= STEPS; step++) {
                float[] w = mixedMagnitudes(random);
                double decay = config.decayAt(step);
                for (int i = 0; i < SIZE; i++) {
                    expected[i] = (float) (decay * expected[i] + (1 - decay) * w[i]);
                }
                ema.update(step, Map.of("w", w));
                assertArrayEquals(expected, ema.averaged().get("w"), config + " after step " + step);
            }
        }
    }

    @Test
    void swaEqualsJavaFloatMath() {
        Random random = new Random(11);
        float[] expected = new float[SIZE];
        SwaAverager swa = new SwaAverager(new SwaAverager.Config(0, 1));
        for (long step = 0; step < STEPS; step++) {
            float[] w = mixedMagnitudes(random);
            for (int i = 0; i < SIZE; i++) {
                expected[i] += (w[i] - expected[i]) / (step + 1);
            }
            swa.update(step, Map.of("w", w));
            assertArrayEquals(expected, swa.averaged().get("w"), "after snapshot " + (step + 1));
        }
    }

    @Test
    void lawaEqualsAMeanSummedInDouble() {
        Random random = new Random(13);
        int k = 5;
        LawaAverager lawa = new LawaAverager(new LawaAverager.Config(k, 1));
        List<float[]> kept = new ArrayList<>();
        for (long step = 1; step <= STEPS; step++) {
            float[] w = mixedMagnitudes(random);
            kept.add(w);
            if (kept.size() > k) {
                kept.remove(0);
            }
            lawa.update(step, Map.of("w", w));
            float[] expected = new float[SIZE];
            for (int i = 0; i < SIZE; i++) {
                double sum = 0;
                for (float[] snapshot : kept) {
                    sum += snapshot[i];
                }
                expected[i] = (float) (sum / kept.size());
            }
            assertArrayEquals(expected, lawa.averaged().get("w"), "after step " + step);
        }
    }

    /** Gaussians scaled by 10^[-4, 2]. */
    private static float[] mixedMagnitudes(Random random) {
        float[] values = new float[SIZE];
        for (int i = 0; i < SIZE; i++) {
            values[i] = (float) (random.nextGaussian() * Math.pow(10, -4 + 6 * random.nextDouble()));
        }
        return values;
    }
}
