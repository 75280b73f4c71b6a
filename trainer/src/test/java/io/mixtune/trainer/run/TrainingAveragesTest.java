package io.mixtune.trainer.run;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import io.mixtune.merging.averaging.EmaAverager;
import io.mixtune.merging.averaging.LawaAverager;
import io.mixtune.merging.averaging.SwaAverager;
import io.mixtune.model.nn.InPlaceCopy;
import io.mixtune.trainer.recipe.Recipe;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The averages a run keeps on its device equal, bit for bit, those of the merging module's averagers fed the same
 * weights step by step: the same decays, SWA steps and counts, LaWA windows and feed-back, wired through a run's
 * arrays. The formulas themselves share their libtorch code with those averagers; AveragingFormulasTest holds them to
 * Java float math written out (EMA in double rounded once to float per step, SWA in float, LaWA summed in double),
 * where a fused multiply-add or a float32 EMA already differs in the last bit after a step or two over weights of mixed
 * magnitudes, which is what these are too.
 */
class TrainingAveragesTest {
    private static final List<String> NAMES = List.of("layers.0.lora_A.weight", "layers.0.lora_B.weight");
    private static final List<Shape> SHAPES = List.of(new Shape(4, 96), new Shape(96, 4));
    private static final int STEPS = 13;

    static Stream<Arguments> averagings() {
        return Stream.of(
                Arguments.of("ema constant", averaging(0.999, false, 1, 2.0 / 3.0, 0, 0, null, 1, 0, 1, false)),
                Arguments.of("ema warmup", averaging(0.9999, true, 1, 0.75, 0, 0, null, 1, 0, 1, false)),
                Arguments.of("ema warmup after step, min decay",
                        averaging(0.999, true, 10, 0.75, 3, 0.5, null, 1, 0, 1, false)),
                Arguments.of("swa", averaging(null, false, 1, 2.0 / 3.0, 0, 0, 3.0, 2, 0, 1, false)),
                Arguments.of("lawa", averaging(null, false, 1, 2.0 / 3.0, 0, 0, null, 1, 3, 2, false)),
                Arguments.of("lawa fed back", averaging(null, false, 1, 2.0 / 3.0, 0, 0, null, 1, 3, 2, true)),
                Arguments.of("all three", averaging(0.99, true, 1, 2.0 / 3.0, 1, 0, 0.25, 3, 2, 3, true)));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("averagings")
    void deviceAveragesEqualJavaFloatMathBitForBit(String name, Recipe.Averaging config) {
        Random random = new Random(name.hashCode());
        try (NDManager manager = NDManager.newBaseManager()) {
            List<NDArray> parameters = new ArrayList<>();
            Map<String, float[]> weights = new LinkedHashMap<>();
            for (int i = 0; i < NAMES.size(); i++) {
                float[] values = mixedMagnitudes(random, SHAPES.get(i).size());
                NDArray parameter = manager.create(values, SHAPES.get(i));
                parameter.setRequiresGradient(true);
                parameters.add(parameter);
                weights.put(NAMES.get(i), values);
            }
            EmaAverager ema = config.emaDecay() == null ? null : new EmaAverager(new EmaAverager.Config(
                    config.emaDecay(), config.emaWarmup(), config.emaWarmupGamma(), config.emaWarmupPower(),
                    config.emaUpdateAfterStep(), config.emaMinDecay()), weights);
            SwaAverager swa = config.swaStart() == null ? null
                    : new SwaAverager(SwaAverager.Config.of(config.swaStart(), config.swaEvery(), STEPS));
            LawaAverager lawa = config.lawaK() == 0 ? null
                    : new LawaAverager(new LawaAverager.Config(config.lawaK(), config.lawaEvery()));
            try (TrainingAverages averages = new TrainingAverages(config, STEPS, NAMES, parameters)) {
                for (long step = 1; step <= STEPS; step++) {
                    // What an optimizer step leaves: new weights, here drawn at random.
                    weights = new LinkedHashMap<>();
                    for (int i = 0; i < NAMES.size(); i++) {
                        float[] values = mixedMagnitudes(random, SHAPES.get(i).size());
                        InPlaceCopy.copy(parameters.get(i), values);
                        weights.put(NAMES.get(i), values);
                    }
                    averages.afterStep(step, parameters);
                    Map<String, Map<String, float[]>> expected = new LinkedHashMap<>();
                    if (ema != null) {
                        ema.update(step, weights);
                        expected.put("ema", ema.averaged());
                    }
                    if (swa != null) {
                        swa.update(step, weights);
                        if (swa.count() > 0) {
                            expected.put("swa", swa.averaged());
                        }
                    }
                    if (lawa != null && lawa.update(step, weights) && config.lawaFeedBack()) {
                        weights = lawa.averaged();
                    }
                    if (lawa != null && lawa.count() > 0) {
                        expected.put("lawa", lawa.averaged());
                    }
                    Map<String, List<NDArray>> current = averages.current();
                    assertEquals(expected.keySet(), current.keySet(), "averages after step " + step);
                    for (Map.Entry<String, Map<String, float[]>> average : expected.entrySet()) {
                        for (int i = 0; i < NAMES.size(); i++) {
                            assertArrayEquals(average.getValue().get(NAMES.get(i)),
                                    current.get(average.getKey()).get(i).toFloatArray(),
                                    average.getKey() + " " + NAMES.get(i) + " after step " + step);
                        }
                    }
                    for (int i = 0; i < NAMES.size(); i++) {
                        assertArrayEquals(weights.get(NAMES.get(i)), parameters.get(i).toFloatArray(),
                                "trained weights " + NAMES.get(i) + " after step " + step);
                    }
                }
            }
        }
    }

    /**
     * A run resumed after step 6 from what a checkpoint keeps ({@link TrainingAverages#arrays}) ends with the averages
     * of the uninterrupted run, bit for bit; swa_start 0.0 (SWA from the first step) among them, whose first averaged
     * step is swa_every, not 0: the restored SWA count was one too many there, so every later fold was off.
     */
    @ParameterizedTest(name = "{0}")
    @MethodSource("resumed")
    void resumedAveragesEqualTheUninterruptedOnes(String name, Recipe.Averaging config) {
        Random random = new Random(name.hashCode());
        List<List<float[]>> trained = new ArrayList<>();
        for (int step = 0; step <= STEPS; step++) {
            List<float[]> weights = new ArrayList<>();
            SHAPES.forEach(shape -> weights.add(mixedMagnitudes(random, shape.size())));
            trained.add(weights);
        }
        try (NDManager manager = NDManager.newBaseManager()) {
            List<NDArray> parameters = new ArrayList<>();
            for (int i = 0; i < NAMES.size(); i++) {
                parameters.add(manager.create(trained.get(0).get(i), SHAPES.get(i)));
            }
            Map<String, List<float[]>> uninterrupted = new LinkedHashMap<>();
            Map<String, List<float[]>> saved = new LinkedHashMap<>();
            try (TrainingAverages averages = new TrainingAverages(config, STEPS, NAMES, parameters)) {
                for (int step = 1; step <= STEPS; step++) {
                    for (int i = 0; i < NAMES.size(); i++) {
                        InPlaceCopy.copy(parameters.get(i), trained.get(step).get(i));
                    }
                    averages.afterStep(step, parameters);
                    if (step == 6) {
                        averages.arrays().forEach((average, arrays) -> saved.put(average, floats(arrays)));
                    }
                }
                averages.current().forEach((average, arrays) -> uninterrupted.put(average, floats(arrays)));
            }
            try (TrainingAverages averages = new TrainingAverages(config, STEPS, NAMES, parameters)) {
                averages.restore(6, saved.keySet(), (average, into) -> {
                    for (int i = 0; i < into.size(); i++) {
                        InPlaceCopy.copy(into.get(i), saved.get(average).get(i));
                    }
                });
                for (int step = 7; step <= STEPS; step++) {
                    for (int i = 0; i < NAMES.size(); i++) {
                        InPlaceCopy.copy(parameters.get(i), trained.get(step).get(i));
                    }
                    averages.afterStep(step, parameters);
                }
                Map<String, List<NDArray>> current = averages.current();
                assertEquals(uninterrupted.keySet(), current.keySet());
                uninterrupted.forEach((average, arrays) -> {
                    for (int i = 0; i < NAMES.size(); i++) {
                        assertArrayEquals(arrays.get(i), current.get(average).get(i).toFloatArray(),
                                average + " " + NAMES.get(i) + " after the resumed run");
                    }
                });
            }
        }
    }

    /** An average that a run of these steps never reaches is named, with what it means; a reachable one is not. */
    @Test
    void averagesThatTheRunNeverReachesAreNamed() {
        try (NDManager manager = NDManager.newBaseManager()) {
            List<NDArray> parameters = List.of(manager.ones(SHAPES.get(0)), manager.zeros(SHAPES.get(1)));
            Recipe.Averaging late = averaging(0.9, false, 1, 2.0 / 3.0, 11, 0, 13.0, 1, 3, 13, false);
            try (TrainingAverages averages = new TrainingAverages(late, 12, NAMES, parameters)) {
                assertEquals(List.of(
                        "averaging.swa_start 13 first averages step 13, after the last of these 12 steps: no SWA average"
                                + " is kept and no adapter-swa written",
                        "averaging.lawa_every 13 is more than these 12 steps: no LaWA snapshot is kept and no"
                                + " adapter-lawa written",
                        "averaging.ema_update_after_step 11: the EMA only copies the weights up to the last of these 12"
                                + " steps, so adapter-ema equals adapter"), averages.unreached());
            }
            // From the start every 13 steps: the first averaged step is 13. A fraction of 12 steps: step 9.
            try (TrainingAverages averages = new TrainingAverages(
                    averaging(null, false, 1, 2.0 / 3.0, 0, 0, 0.0, 13, 0, 1, false), 12, NAMES, parameters)) {
                assertEquals(List.of("averaging.swa_start 0 first averages step 13, after the last of these 12 steps:"
                        + " no SWA average is kept and no adapter-swa written"), averages.unreached());
            }
            // The last step reached by each: SWA at step 12, a LaWA snapshot at 12, the EMA averaging from step 12.
            try (TrainingAverages averages = new TrainingAverages(
                    averaging(0.9, false, 1, 2.0 / 3.0, 10, 0, 0.75, 4, 3, 12, false), 12, NAMES, parameters)) {
                assertEquals(List.of(), averages.unreached());
            }
        }
    }

    /**
     * SWALR as torch runs it from the first step (built before it, stepped after each): update k at SWALR's rate after
     * k - 1 scheduler steps, lr(k) = swa_lr a(t) + lr (1 - a(t)), t = (k - 1) / anneal_steps, cos. swa_start 0.0 and 1
     * start the same phase; 0.0 was one anneal step ahead.
     */
    @Test
    void swaLearningRateFromTheStartBeginsAtTheScheduleRate() {
        try (NDManager manager = NDManager.newBaseManager()) {
            List<NDArray> parameters = List.of(manager.ones(SHAPES.get(0)), manager.zeros(SHAPES.get(1)));
            for (double start : new double[] {0.0, 1.0}) {
                Recipe.Averaging config = new Recipe.Averaging(null, false, 1, 2.0 / 3.0, 0, 0, start, 1, 0.01, 4,
                        "cos", 0, 1, false);
                try (TrainingAverages averages = new TrainingAverages(config, 10, NAMES, parameters)) {
                    for (int update = 1; update <= 6; update++) {
                        double t = Math.min(1, (update - 1) / 4.0);
                        double a = (1 - Math.cos(Math.PI * t)) / 2;
                        assertEquals(0.01 * a + 0.1 * (1 - a), averages.learningRate(update - 1, s -> 0.1), 1e-15,
                                "swa_start " + start + ", update " + update);
                    }
                }
            }
        }
    }

    static Stream<Arguments> resumed() {
        return Stream.of(
                Arguments.of("swa from step 3, every 2", averaging(null, false, 1, 2.0 / 3.0, 0, 0, 3.0, 2, 0, 1, false)),
                Arguments.of("swa from the start, every 2",
                        averaging(null, false, 1, 2.0 / 3.0, 0, 0, 0.0, 2, 0, 1, false)),
                Arguments.of("swa from the start, every step",
                        averaging(null, false, 1, 2.0 / 3.0, 0, 0, 0.0, 1, 0, 1, false)),
                Arguments.of("all three", averaging(0.99, true, 1, 2.0 / 3.0, 1, 0, 0.25, 3, 2, 3, true)));
    }

    private static List<float[]> floats(List<NDArray> arrays) {
        return arrays.stream().map(NDArray::toFloatArray).toList();
    }

    @Test
    void averagesLiveOnTheParametersDeviceAndAreFreedWhenClosed() {
        try (NDManager manager = NDManager.newBaseManager()) {
            List<NDArray> parameters = List.of(manager.ones(SHAPES.get(0)), manager.zeros(SHAPES.get(1)));
            List<NDArray> held = new ArrayList<>();
            try (TrainingAverages averages = new TrainingAverages(
                    averaging(0.9, false, 1, 2.0 / 3.0, 0, 0, 1.0, 1, 2, 1, false), 4, NAMES, parameters)) {
                averages.afterStep(1, parameters);
                averages.current().values().forEach(held::addAll);
                assertEquals(6, held.size(), "ema, swa and lawa, two arrays each");
                held.forEach(array -> assertEquals(manager.getDevice(), array.getDevice()));
            }
            held.forEach(array -> assertTrue(array.isReleased(), "closing the averages frees their arrays"));
            parameters.forEach(parameter -> assertTrue(!parameter.isReleased(), "the parameters stay"));
        }
    }

    /** An optimizer step adds nothing that stays: the native arrays after 40 steps are those after 10. */
    @Test
    void stepsLeaveNoArraysBehind() {
        try (NDManager manager = NDManager.newBaseManager()) {
            List<NDArray> parameters = List.of(manager.ones(SHAPES.get(0)), manager.zeros(SHAPES.get(1)));
            try (TrainingAverages averages = new TrainingAverages(
                    averaging(0.9, true, 1, 2.0 / 3.0, 0, 0, 0.1, 1, 3, 2, true), 40, NAMES, parameters)) {
                int afterTen = 0;
                for (long step = 1; step <= 40; step++) {
                    averages.afterStep(step, parameters);
                    averages.withWeights(parameters, averages.current().get("ema"), () -> { });
                    if (step == 10) {
                        afterTen = manager.getManagedArrays().size();
                    }
                }
                // The parameters, EMA, SWA, LaWA's 3 snapshots and mean (2 arrays each), SWA's count and the 1 it adds.
                assertEquals(2 + 2 + 2 + 3 * 2 + 2 + 2, afterTen);
                assertEquals(afterTen, manager.getManagedArrays().size());
            }
            assertEquals(2, manager.getManagedArrays().size(), "closing the averages leaves the parameters");
        }
    }

    private static Recipe.Averaging averaging(Double emaDecay, boolean warmup, double gamma, double power,
            long updateAfterStep, double minDecay, Double swaStart, int swaEvery, int lawaK, int lawaEvery,
            boolean lawaFeedBack) {
        return new Recipe.Averaging(emaDecay, warmup, gamma, power, updateAfterStep, minDecay, swaStart, swaEvery,
                null, 0, "cos", lawaK, lawaEvery, lawaFeedBack);
    }

    /** Gaussians scaled by 10^[-4, 2]: sums and products of such floats round in their last bits. */
    private static float[] mixedMagnitudes(Random random, long size) {
        float[] values = new float[(int) size];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (random.nextGaussian() * Math.pow(10, -4 + 6 * random.nextDouble()));
        }
        return values;
    }
}
