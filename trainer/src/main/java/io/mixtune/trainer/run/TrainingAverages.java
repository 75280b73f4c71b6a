package io.mixtune.trainer.run;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import io.mixtune.merging.averaging.EmaAverager;
import io.mixtune.merging.averaging.LawaAverager;
import io.mixtune.merging.averaging.SwaAverager;
import io.mixtune.merging.averaging.SwaLearningRate;
import io.mixtune.model.nn.InPlaceCopy;
import io.mixtune.trainer.recipe.Recipe;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.function.BiConsumer;
import java.util.function.LongToDoubleFunction;

/**
 * The weight averages of a recipe's {@code averaging} section, kept beside training over the adapter's weights: EMA,
 * SWA (with SWALR's learning-rate phase) and LaWA, each folded in after the optimizer steps it asks for. The loop
 * evaluates each next to the raw weights, saves them in checkpoints (so a resumed run continues the very averages) and
 * writes them as adapters of their own.
 *
 * <p>The averages live on the parameters' device, in a manager of their own under the parameters' (freed by
 * {@link #close}), and are updated there by the averagers' own formulas ({@link EmaAverager#updated},
 * {@link SwaAverager#fold}, {@link LawaAverager#mean}), as torch's AveragedModel and diffusers' EMAModel keep their
 * shadow parameters beside the model: an optimizer step reads nothing back to the host, only a checkpoint or an
 * adapter written does. That costs one adapter-sized float32 copy on the device per EMA and SWA and k for LaWA.
 */
public final class TrainingAverages implements AutoCloseable {
    private final List<String> names;
    private final List<Shape> shapes;
    private final NDManager manager;
    private final EmaAverager.Config emaConfig;
    private List<NDArray> ema;
    private final SwaAverager.Config swaConfig;
    private List<NDArray> swa;
    /** The snapshot count + 1, the divisor of SWA's next fold, kept on the device and counted up there. */
    private NDArray swaDivisor;
    /** 1 as a host scalar, which a CUDA add takes as an argument (an array made on the device would be an upload). */
    private final NDArray one;
    private final Recipe.Averaging config;
    private final LawaAverager.Config lawaConfig;
    private final Deque<List<NDArray>> lawaSnapshots = new ArrayDeque<>();
    private List<NDArray> lawaMean;
    private final long totalSteps;

    /**
     * @param names the adapter arrays' names, in the order of {@code parameters}
     * @param parameters the trainable arrays at the start of the run (the EMA starts as their copy)
     */
    public TrainingAverages(Recipe.Averaging config, long totalSteps, List<String> names, List<NDArray> parameters) {
        this.config = config;
        this.totalSteps = totalSteps;
        this.names = List.copyOf(names);
        shapes = parameters.stream().map(NDArray::getShape).toList();
        emaConfig = config.emaDecay() == null ? null : new EmaAverager.Config(config.emaDecay(), config.emaWarmup(),
                config.emaWarmupGamma(), config.emaWarmupPower(), config.emaUpdateAfterStep(), config.emaMinDecay());
        swaConfig = config.swaStart() == null ? null
                : SwaAverager.Config.of(config.swaStart(), config.swaEvery(), totalSteps);
        lawaConfig = config.lawaK() == 0 ? null : new LawaAverager.Config(config.lawaK(), config.lawaEvery());
        manager = isEmpty() ? null : parameters.get(0).getManager().newSubManager();
        ema = emaConfig == null ? null : copies(parameters);
        one = swaConfig == null ? null : manager.newSubManager(Device.cpu()).create(1f);
    }

    /**
     * The adapter-sized float32 copies that the averages of {@code config} hold on the device at most, by average (EMA,
     * SWA, LaWA): one each for EMA and SWA, k snapshots and their mean for LaWA. {@code mixtune plan} counts them.
     */
    public static Map<String, Integer> deviceCopies(Recipe.Averaging config) {
        Map<String, Integer> copies = new LinkedHashMap<>();
        if (config.emaDecay() != null) {
            copies.put("EMA", 1);
        }
        if (config.swaStart() != null) {
            copies.put("SWA", 1);
        }
        if (config.lawaK() > 0) {
            copies.put("LaWA", config.lawaK() + 1);
        }
        return copies;
    }

    /**
     * What the recipe asks for that a run of this many steps never reaches, one line each: an SWA start or a LaWA
     * spacing past its last step (no average is kept, no adapter-swa or adapter-lawa written), or an EMA that only
     * copies the weights up to its end (ema_update_after_step; adapter-ema then equals adapter). torch's swa_utils and
     * timm keep silent there; a run that was shortened with --set would otherwise lose its average unnoticed.
     */
    public List<String> unreached() {
        List<String> lines = new ArrayList<>();
        if (swaConfig != null && swaConfig.countAfter(totalSteps) == 0) {
            double start = config.swaStart();
            lines.add(String.format(Locale.ROOT, "averaging.swa_start %s first averages step %d, after the last of"
                    + " these %d steps: no SWA average is kept and no adapter-swa written",
                    start == Math.rint(start) ? String.valueOf((long) start) : String.valueOf(start),
                    swaConfig.firstAveragedStep(), totalSteps));
        }
        if (lawaConfig != null && lawaConfig.every() > totalSteps) {
            lines.add(String.format(Locale.ROOT, "averaging.lawa_every %d is more than these %d steps: no LaWA"
                    + " snapshot is kept and no adapter-lawa written", lawaConfig.every(), totalSteps));
        }
        if (emaConfig != null && emaConfig.decayAt(totalSteps) == 0) {
            lines.add(String.format(Locale.ROOT, "averaging.ema_update_after_step %d: the EMA only copies the weights"
                    + " up to the last of these %d steps, so adapter-ema equals adapter", emaConfig.updateAfterStep(),
                    totalSteps));
        }
        return lines;
    }

    public boolean isEmpty() {
        return emaConfig == null && swaConfig == null && lawaConfig == null;
    }

    /**
     * The learning rate of optimizer step {@code step} (0-based): the schedule's, or in the SWA phase with swa_lr set,
     * SWALR's anneal from the rate in effect when SWA starts.
     */
    public double learningRate(long step, LongToDoubleFunction schedule) {
        long update = step + 1;
        // Updates count from 1: a start of 0 (swa_start 0.0) begins the phase at the first, as a start of 1 does;
        // not at firstAveragedStep (every), since torch's SWALR anneals from swa_start whatever swa_freq is.
        long firstUpdate = Math.max(1, swaConfig == null ? 1 : swaConfig.startStep());
        if (swaConfig == null || config.swaLr() == null || update < firstUpdate) {
            return schedule.applyAsDouble(step);
        }
        double atStart = schedule.applyAsDouble(firstUpdate - 1);
        return new SwaLearningRate(atStart, config.swaLr(), config.swaAnnealSteps(),
                SwaLearningRate.Anneal.parse(config.swaAnneal())).at(update - firstUpdate);
    }

    /** Folds in the weights after optimizer step {@code step} (1-based); LaWA's feed-back sets them. */
    public void afterStep(long step, List<NDArray> parameters) {
        if (ema != null) {
            double decay = emaConfig.decayAt(step);
            for (int i = 0; i < ema.size(); i++) {
                NDArray previous = ema.get(i);
                ema.set(i, EmaAverager.updated(previous, parameters.get(i), decay));
                previous.close();
            }
        }
        if (swaConfig != null && swaConfig.averages(step)) {
            if (swa == null) {
                swa = parameters.stream().map(parameter -> manager.zeros(parameter.getShape())).toList();
                swaDivisor = manager.ones(new Shape());
            }
            for (int i = 0; i < swa.size(); i++) {
                SwaAverager.fold(swa.get(i), parameters.get(i), swaDivisor);
            }
            swaDivisor.addi(one);
        }
        if (lawaConfig != null && step % lawaConfig.every() == 0) {
            keepLawaSnapshot(copies(parameters));
            if (config.lawaFeedBack()) {
                List<NDArray> mean = lawaMean();
                for (int i = 0; i < parameters.size(); i++) {
                    InPlaceCopy.copy(parameters.get(i), mean.get(i));
                }
            }
        }
    }

    /**
     * The averages that hold something now, by name (ema, swa, lawa), in parameter order, on the parameters' device:
     * this object's arrays, valid until the next {@link #afterStep}.
     */
    public Map<String, List<NDArray>> current() {
        Map<String, List<NDArray>> averages = new LinkedHashMap<>();
        if (ema != null) {
            averages.put("ema", ema);
        }
        if (swa != null) {
            averages.put("swa", swa);
        }
        if (!lawaSnapshots.isEmpty()) {
            averages.put("lawa", lawaMean());
        }
        return averages;
    }

    /**
     * What a checkpoint keeps to resume the averages, the live arrays (valid until the next step): in parameter order,
     * by name (lawa.0 is the oldest).
     */
    public Map<String, List<NDArray>> arrays() {
        Map<String, List<NDArray>> arrays = new LinkedHashMap<>();
        if (ema != null) {
            arrays.put("ema", ema);
        }
        if (swa != null) {
            arrays.put("swa", swa);
        }
        int i = 0;
        for (List<NDArray> snapshot : lawaSnapshots) {
            arrays.put("lawa." + i++, snapshot);
        }
        return arrays;
    }

    /**
     * Puts back what a checkpoint saved of {@link #arrays} after step {@code step}.
     *
     * @param saved the names of the saved averages
     * @param readInto writes the saved average of a name into the arrays it is given (of the parameters' shapes)
     */
    public void restore(long step, Set<String> saved, BiConsumer<String, List<NDArray>> readInto) {
        if (ema != null && saved.contains("ema")) {
            ema.forEach(NDArray::close);
            ema = read("ema", readInto);
        }
        if (swaConfig != null && saved.contains("swa")) {
            if (swa != null) {
                swa.forEach(NDArray::close);
            }
            swa = read("swa", readInto);
            if (swaDivisor != null) {
                swaDivisor.close();
            }
            swaDivisor = manager.full(new Shape(), swaConfig.countAfter(step) + 1);
        }
        if (lawaConfig != null) {
            lawaSnapshots.forEach(snapshot -> snapshot.forEach(NDArray::close));
            lawaSnapshots.clear();
            for (int i = 0; saved.contains("lawa." + i); i++) {
                keepLawaSnapshot(read("lawa." + i, readInto));
            }
        }
    }

    /** Runs {@code action} with the parameters holding {@code weights}, then puts the trained weights back. */
    public void withWeights(List<NDArray> parameters, List<NDArray> weights, Runnable action) {
        try (NDManager scratch = manager.newSubManager()) {
            List<NDArray> trained = copies(parameters, scratch);
            for (int i = 0; i < parameters.size(); i++) {
                InPlaceCopy.copy(parameters.get(i), weights.get(i));
            }
            try {
                action.run();
            } finally {
                for (int i = 0; i < parameters.size(); i++) {
                    InPlaceCopy.copy(parameters.get(i), trained.get(i));
                }
            }
        }
    }

    /** Frees the averages' device memory; the parameters stay. */
    @Override
    public void close() {
        if (manager != null) {
            manager.close();
        }
    }

    /** Keeps a snapshot, dropping the oldest beyond k; the mean is recomputed when next asked for. */
    private void keepLawaSnapshot(List<NDArray> snapshot) {
        lawaSnapshots.addLast(snapshot);
        if (lawaSnapshots.size() > lawaConfig.k()) {
            lawaSnapshots.removeFirst().forEach(NDArray::close);
        }
        if (lawaMean != null) {
            lawaMean.forEach(NDArray::close);
            lawaMean = null;
        }
    }

    private List<NDArray> lawaMean() {
        if (lawaMean == null) {
            List<NDArray> mean = new ArrayList<>();
            for (int i = 0; i < names.size(); i++) {
                int index = i;
                mean.add(LawaAverager.mean(lawaSnapshots.stream().map(snapshot -> snapshot.get(index)).toList()));
            }
            lawaMean = mean;
        }
        return lawaMean;
    }

    /** Device copies of the parameters, in this object's manager. */
    private List<NDArray> copies(List<NDArray> parameters) {
        return copies(parameters, manager);
    }

    /** Copies of the parameters on their device, held by {@code into}. */
    private static List<NDArray> copies(List<NDArray> parameters, NDManager into) {
        List<NDArray> copies = new ArrayList<>();
        for (NDArray parameter : parameters) {
            NDArray copy = into.zeros(parameter.getShape());
            InPlaceCopy.copy(copy, parameter);
            copies.add(copy);
        }
        return copies;
    }

    /** A saved average, read into new arrays on the device. */
    private List<NDArray> read(String name, BiConsumer<String, List<NDArray>> readInto) {
        List<NDArray> arrays = new ArrayList<>(); // updated in place by index (EMA) as the copies are
        for (Shape shape : shapes) {
            arrays.add(manager.zeros(shape));
        }
        readInto.accept(name, arrays);
        return arrays;
    }
}
