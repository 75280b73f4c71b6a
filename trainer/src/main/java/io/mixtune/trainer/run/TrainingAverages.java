package io.mixtune.trainer.run;

import ai.djl.ndarray.NDArray;
import io.mixtune.merging.averaging.EmaAverager;
import io.mixtune.merging.averaging.LawaAverager;
import io.mixtune.merging.averaging.SwaAverager;
import io.mixtune.merging.averaging.SwaLearningRate;
import io.mixtune.model.nn.InPlaceCopy;
import io.mixtune.trainer.recipe.Recipe;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.LongToDoubleFunction;

/**
 * The weight averages of a recipe's {@code averaging} section, kept beside training over the adapter's weights: EMA,
 * SWA (with SWALR's learning-rate phase) and LaWA, each folded in after the optimizer steps it asks for. The loop
 * evaluates each next to the raw weights, saves them in checkpoints (so a resumed run continues the very averages) and
 * writes them as adapters of their own.
 */
public final class TrainingAverages {
    private final List<String> names;
    private final EmaAverager.Config emaConfig;
    private EmaAverager ema;
    private final SwaAverager swa;
    private final SwaAverager.Config swaConfig;
    private final Recipe.Averaging config;
    private final LawaAverager lawa;

    /**
     * @param names the adapter arrays' names, in the order of {@code parameters}
     * @param parameters the trainable arrays at the start of the run (the EMA starts as their copy)
     */
    public TrainingAverages(Recipe.Averaging config, long totalSteps, List<String> names, List<NDArray> parameters) {
        this.config = config;
        this.names = List.copyOf(names);
        emaConfig = config.emaDecay() == null ? null : new EmaAverager.Config(config.emaDecay(), config.emaWarmup(),
                config.emaWarmupGamma(), config.emaWarmupPower(), config.emaUpdateAfterStep(), config.emaMinDecay());
        ema = emaConfig == null ? null : new EmaAverager(emaConfig, weights(parameters));
        swaConfig = config.swaStart() == null ? null
                : SwaAverager.Config.of(config.swaStart(), config.swaEvery(), totalSteps);
        swa = swaConfig == null ? null : new SwaAverager(swaConfig);
        lawa = config.lawaK() == 0 ? null : new LawaAverager(new LawaAverager.Config(config.lawaK(),
                config.lawaEvery()));
    }

    public boolean isEmpty() {
        return ema == null && swa == null && lawa == null;
    }

    /**
     * The learning rate of optimizer step {@code step} (0-based): the schedule's, or in the SWA phase with swa_lr set,
     * SWALR's anneal from the rate in effect when SWA starts.
     */
    public double learningRate(long step, LongToDoubleFunction schedule) {
        long update = step + 1;
        if (swaConfig == null || config.swaLr() == null || update < swaConfig.startStep()) {
            return schedule.applyAsDouble(step);
        }
        double atStart = schedule.applyAsDouble(Math.max(0, swaConfig.startStep() - 1));
        return new SwaLearningRate(atStart, config.swaLr(), config.swaAnnealSteps(),
                SwaLearningRate.Anneal.parse(config.swaAnneal())).at(update - swaConfig.startStep());
    }

    /** Folds in the weights after optimizer step {@code step} (1-based); LaWA's feed-back sets them. */
    public void afterStep(long step, List<NDArray> parameters) {
        if (isEmpty()) {
            return;
        }
        Map<String, float[]> weights = weights(parameters);
        if (ema != null) {
            ema.update(step, weights);
        }
        if (swa != null) {
            swa.update(step, weights);
        }
        if (lawa != null && lawa.update(step, weights) && config.lawaFeedBack()) {
            set(parameters, lawa.averaged());
        }
    }

    /** The averages that hold something now, by name (ema, swa, lawa). */
    public Map<String, Map<String, float[]>> current() {
        Map<String, Map<String, float[]>> averages = new LinkedHashMap<>();
        if (ema != null) {
            averages.put("ema", ema.averaged());
        }
        if (swa != null && swa.count() > 0) {
            averages.put("swa", swa.averaged());
        }
        if (lawa != null && lawa.count() > 0) {
            averages.put("lawa", lawa.averaged());
        }
        return averages;
    }

    /** What a checkpoint keeps to resume the averages: arrays in parameter order, by name (lawa.0 is the oldest). */
    public Map<String, List<float[]>> state() {
        Map<String, List<float[]>> state = new LinkedHashMap<>();
        if (ema != null) {
            state.put("ema", inOrder(ema.averaged()));
        }
        if (swa != null && swa.count() > 0) {
            state.put("swa", inOrder(swa.averaged()));
        }
        if (lawa != null) {
            List<Map<String, float[]>> snapshots = lawa.snapshots();
            for (int i = 0; i < snapshots.size(); i++) {
                state.put("lawa." + i, inOrder(snapshots.get(i)));
            }
        }
        return state;
    }

    /** Puts back what {@link #state} saved after step {@code step}. */
    public void restore(long step, Map<String, List<float[]>> state) {
        if (ema != null && state.containsKey("ema")) {
            ema = new EmaAverager(emaConfig, byName(state.get("ema")));
        }
        if (swa != null && state.containsKey("swa")) {
            swa.restore(step, byName(state.get("swa")));
        }
        if (lawa != null) {
            List<Map<String, float[]>> snapshots = new ArrayList<>();
            for (int i = 0; state.containsKey("lawa." + i); i++) {
                snapshots.add(byName(state.get("lawa." + i)));
            }
            lawa.restore(snapshots);
        }
    }

    /** Runs {@code action} with the parameters holding {@code weights}, then puts the trained weights back. */
    public void withWeights(List<NDArray> parameters, Map<String, float[]> weights, Runnable action) {
        Map<String, float[]> trained = weights(parameters);
        set(parameters, weights);
        try {
            action.run();
        } finally {
            set(parameters, trained);
        }
    }

    private Map<String, float[]> weights(List<NDArray> parameters) {
        Map<String, float[]> weights = new LinkedHashMap<>();
        for (int i = 0; i < parameters.size(); i++) {
            weights.put(names.get(i), parameters.get(i).toFloatArray());
        }
        return weights;
    }

    private void set(List<NDArray> parameters, Map<String, float[]> weights) {
        for (int i = 0; i < parameters.size(); i++) {
            InPlaceCopy.copy(parameters.get(i), weights.get(names.get(i)));
        }
    }

    private List<float[]> inOrder(Map<String, float[]> weights) {
        return names.stream().map(weights::get).toList();
    }

    private Map<String, float[]> byName(List<float[]> arrays) {
        Map<String, float[]> weights = new LinkedHashMap<>();
        for (int i = 0; i < names.size(); i++) {
            weights.put(names.get(i), arrays.get(i));
        }
        return weights;
    }
}
