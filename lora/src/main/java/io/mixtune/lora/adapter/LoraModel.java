package io.mixtune.lora.adapter;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import io.mixtune.model.mistral.CausalLm;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;

/**
 * A model with LoRA adapters attached, PEFT's LoraModel: wraps the targeted linear layers of a {@link CausalLm} in
 * {@link LoraLinear}s, remembers each adapter's config, and switches adapters on, off or between names.
 */
public final class LoraModel {
    private final CausalLm model;
    private final NDManager manager;
    private final Map<String, LoraLinear> layers = new LinkedHashMap<>();
    private final Map<String, LoraConfig> configs = new LinkedHashMap<>();
    // Per adapter, modules trained in full beside it (PEFT's modules_to_save), such as a reward model's score head.
    private final Map<String, Map<String, NDArray>> modulesToSave = new LinkedHashMap<>();
    // Per adapter started by PiSSA or OLoRA, its A0 and B0 per module (LoraModel#addMutatedAdapter).
    private final Map<String, Map<String, float[][]>> initialWeights = new LinkedHashMap<>();
    // The modes set through this class (every layer holds the same): what a Scope puts back.
    private String active;
    private boolean enabled = true;
    private boolean training;

    public LoraModel(CausalLm model) {
        this.model = model;
        this.manager = model.manager().newSubManager();
        model.replaceLinears((name, linear) -> {
            if (linear instanceof LoraLinear lora) {
                layers.put(name, lora);
                return lora;
            }
            return linear;
        });
    }

    public CausalLm model() {
        return model;
    }

    /** How A and B start. */
    public enum Init {
        /** PEFT's default: A Kaiming-uniform (a = sqrt(5), so U(-1/sqrt(in), 1/sqrt(in))), B zero: no change at first. */
        PEFT_DEFAULT,
        /** PEFT's init_lora_weights=False: B Kaiming-uniform too, so the adapter changes the output (for tests). */
        RANDOM,
        /** PEFT's "gaussian" (reset_lora_parameters): A ~ N(0, (1/r)^2), its std 1/r, B zero. */
        GAUSSIAN,
        /**
         * PEFT's "orthogonal" (orthogonal_init, r even): Q of a random r x r matrix's QR; A = (G1 Q[0::2])^T / 10,
         * B = G2^T Q[1::2] / 10 with G1 [in, r/2], G2 [r/2, out] standard normal, so B A = 0 (Q's rows are
         * orthonormal) while neither is zero.
         */
        ORTHOGONAL;

        /** The start of a recipe's init_lora_weights that sets only A and B. */
        public static Init of(LoraInit init) {
            return switch (init.kind()) {
                case PEFT_DEFAULT -> PEFT_DEFAULT;
                case GAUSSIAN -> GAUSSIAN;
                case ORTHOGONAL -> ORTHOGONAL;
                default -> throw new IllegalArgumentException(init + " reads the base weights as they load "
                        + "(io.mixtune.lora.init.MutatedInit)");
            };
        }
    }

    /** Adds a new adapter to every layer the config targets; the first adapter added becomes active. */
    public void addAdapter(String name, LoraConfig config, Init init, long seed) {
        if (configs.containsKey(name)) {
            throw new IllegalArgumentException("an adapter named \"" + name + "\" is already loaded");
        }
        List<String> targeted = new ArrayList<>();
        model.replaceLinears((moduleName, linear) -> {
            if (!config.targets(moduleName)) {
                return linear;
            }
            targeted.add(moduleName);
            checkDora(name, config, moduleName);
            LoraLinear lora = layers.computeIfAbsent(moduleName, n -> linear instanceof LoraLinear l ? l : new LoraLinear(linear));
            int rank = config.rankOf(moduleName);
            SplittableRandom random = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + moduleName.hashCode());
            if (init == Init.ORTHOGONAL) {
                NDArray[] ab = orthogonal(random, rank, (int) lora.inFeatures(), (int) lora.outFeatures(), moduleName);
                lora.add(name, adapterOf(lora, ab[0], ab[1], null, config, moduleName));
                return lora;
            }
            NDArray a = init == Init.GAUSSIAN ? gaussian(random, new Shape(rank, lora.inFeatures()), 1.0 / rank)
                    : uniform(random, new Shape(rank, lora.inFeatures()), 1.0 / Math.sqrt(lora.inFeatures()));
            NDArray b = init == Init.RANDOM
                    ? uniform(random, new Shape(lora.outFeatures(), rank), 1.0 / Math.sqrt(rank))
                    : manager.zeros(new Shape(lora.outFeatures(), rank));
            lora.add(name, adapterOf(lora, a, b, null, config, moduleName));
            return lora;
        });
        if (targeted.isEmpty()) {
            throw new IllegalArgumentException("adapter \"" + name + "\": target_modules " + config.targetModules()
                    + " match no linear layer of this " + model.config().modelType().hfName() + " model");
        }
        configs.put(name, config);
        if (active == null) {
            active = name;
        }
    }

    /**
     * Adds an adapter from given weights, module name to A [r, in] and B [out, r], and with DoRA its magnitude [out]
     * third (loading a saved adapter).
     */
    void addAdapter(String name, LoraConfig config, Map<String, float[][]> weights) {
        if (configs.containsKey(name)) {
            throw new IllegalArgumentException("an adapter named \"" + name + "\" is already loaded");
        }
        Map<String, float[][]> remaining = new LinkedHashMap<>(weights);
        model.replaceLinears((moduleName, linear) -> {
            float[][] ab = remaining.remove(moduleName);
            if (ab == null) {
                return linear;
            }
            checkDora(name, config, moduleName);
            if (config.useDora() != (ab.length == 3)) {
                throw new IllegalArgumentException("adapter \"" + name + "\": " + moduleName + (config.useDora()
                        ? " has no DoRA magnitude (lora_magnitude_vector) though use_dora is true"
                        : " has a DoRA magnitude though use_dora is false"));
            }
            LoraLinear lora = layers.computeIfAbsent(moduleName, n -> linear instanceof LoraLinear l ? l : new LoraLinear(linear));
            int rank = config.rankOf(moduleName);
            lora.add(name, adapterOf(lora, manager.create(ab[0], new Shape(rank, lora.inFeatures())),
                    manager.create(ab[1], new Shape(lora.outFeatures(), rank)),
                    ab.length == 3 ? manager.create(ab[2], new Shape(lora.outFeatures())) : null, config, moduleName));
            return lora;
        });
        if (!remaining.isEmpty()) {
            throw new IllegalArgumentException("adapter \"" + name + "\" has weights for modules this model does not "
                    + "have: " + remaining.keySet());
        }
        configs.put(name, config);
        if (active == null) {
            active = name;
        }
    }

    /**
     * Adds an adapter that PiSSA or OLoRA started ({@link io.mixtune.lora.init.MutatedInit}): A0, B0 per module (module
     * name to {A0 [r, in], B0 [out, r]}) on a base whose weights are the residuals W - scale B0 A0. They are kept:
     * the adapter is written as PEFT's conversion to a plain LoRA of the original base ({@link #initialWeights}).
     */
    public void addMutatedAdapter(String name, LoraConfig config, Map<String, float[][]> initial) {
        if (config.useDora()) {
            // PEFT's subtract_mutated_init converts lora_A and lora_B only: the magnitude of the residual's norm
            // would be dropped from the converted adapter.
            throw new IllegalArgumentException("adapter \"" + name + "\": PiSSA and OLoRA with DoRA cannot be "
                    + "written as a plain LoRA adapter of the original base (PEFT's conversion drops DoRA's magnitude)");
        }
        if (config.useRslora() && (!config.rankPattern().isEmpty() || !config.alphaPattern().isEmpty())) {
            throw new IllegalArgumentException("adapter \"" + name + "\": PiSSA and OLoRA with rslora and a rank or "
                    + "alpha pattern cannot be converted to a plain LoRA adapter (PEFT's save_pretrained refuses it)");
        }
        Map<String, float[][]> copies = new LinkedHashMap<>();
        initial.forEach((module, ab) -> copies.put(module, new float[][] {ab[0].clone(), ab[1].clone()}));
        addAdapter(name, config, initial);
        initialWeights.put(name, Collections.unmodifiableMap(copies));
    }

    /**
     * Module name to {A0, B0} of an adapter that PiSSA or OLoRA started (whose base weights are residuals); empty for
     * any other adapter.
     */
    public Map<String, float[][]> initialWeights(String adapterName) {
        config(adapterName);
        return initialWeights.getOrDefault(adapterName, Map.of());
    }

    /**
     * Puts an adapter from given weights (module name to A [r, in] and B [out, r]) under {@code name} and makes it
     * active, first dropping and freeing one already of that name: a search over compositions of adapters (LoraHub)
     * tries many on one loaded base.
     */
    public void putAdapter(String name, LoraConfig config, Map<String, float[][]> weights) {
        if (configs.containsKey(name)) {
            removeAdapter(name);
        }
        addAdapter(name, config, weights);
        setActiveAdapter(name);
    }

    /** Drops an adapter from every layer, freeing its arrays. */
    public void removeAdapter(String name) {
        config(name);
        layers.values().forEach(layer -> layer.remove(name));
        configs.remove(name);
        initialWeights.remove(name);
        if (name.equals(active)) {
            active = configs.isEmpty() ? null : configs.keySet().iterator().next();
        }
    }

    /**
     * A and B (and with DoRA the magnitude: the given one, else PEFT's init, DoraLinearLayer.update_layer: the norm of
     * each output row of W + scale B A, of W alone when B starts at zero), all trainable.
     */
    private LoraLinear.Adapter adapterOf(LoraLinear layer, NDArray a, NDArray b, NDArray magnitude, LoraConfig config,
            String moduleName) {
        a.setRequiresGradient(true);
        b.setRequiresGradient(true);
        double scale = config.scaleOf(moduleName);
        if (config.useDora() && magnitude == null) {
            magnitude = layer.weightNormOf(new LoraLinear.Adapter(a, b, scale, 0), model.computeType(), manager);
        }
        if (magnitude != null) {
            magnitude.setRequiresGradient(true);
        }
        return new LoraLinear.Adapter(a, b, scale, config.dropout(), magnitude);
    }

    private static void checkDora(String adapterName, LoraConfig config, String moduleName) {
        try {
            config.checkDoraTarget(moduleName);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("adapter \"" + adapterName + "\": " + e.getMessage(), e);
        }
    }

    /** A [r, in] and B [out, r] of PEFT's orthogonal_init ({@link Init#ORTHOGONAL}). */
    private NDArray[] orthogonal(SplittableRandom random, int rank, int in, int out, String moduleName) {
        if (rank % 2 != 0) {
            throw new IllegalArgumentException(moduleName + ": init_lora_weights orthogonal needs an even rank, got "
                    + rank + " (PEFT refuses it too)");
        }
        double[][] columns = new double[rank][rank];
        for (double[] column : columns) {
            for (int i = 0; i < rank; i++) {
                column[i] = random.nextGaussian();
            }
        }
        double[][] q = io.mixtune.lora.init.ThinQr.of(columns).q(); // q[j] is Q's column j: Q[i][j] = q[j][i]
        int half = rank / 2;
        float[] a = new float[rank * in];
        double[][] g1 = new double[in][half];
        for (double[] row : g1) {
            for (int k = 0; k < half; k++) {
                row[k] = random.nextGaussian();
            }
        }
        for (int j = 0; j < rank; j++) {
            for (int c = 0; c < in; c++) {
                double sum = 0;
                for (int k = 0; k < half; k++) {
                    sum += g1[c][k] * q[j][2 * k]; // (G1 Q[0::2])[c][j], Q[0::2] row k = Q's row 2k
                }
                a[j * in + c] = (float) (sum / 10);
            }
        }
        float[] b = new float[out * rank];
        double[][] g2 = new double[half][out];
        for (double[] row : g2) {
            for (int i = 0; i < out; i++) {
                row[i] = random.nextGaussian();
            }
        }
        for (int i = 0; i < out; i++) {
            for (int j = 0; j < rank; j++) {
                double sum = 0;
                for (int k = 0; k < half; k++) {
                    sum += g2[k][i] * q[j][2 * k + 1];
                }
                b[i * rank + j] = (float) (sum / 10);
            }
        }
        return new NDArray[] {manager.create(a, new Shape(rank, in)), manager.create(b, new Shape(out, rank))};
    }

    private NDArray gaussian(SplittableRandom random, Shape shape, double std) {
        float[] values = new float[Math.toIntExact(shape.size())];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (random.nextGaussian() * std);
        }
        return manager.create(values, shape);
    }

    private NDArray uniform(SplittableRandom random, Shape shape, double bound) {
        return manager.create(uniformValues(random, Math.toIntExact(shape.size()), bound), shape);
    }

    private static float[] uniformValues(SplittableRandom random, int size, double bound) {
        float[] values = new float[size];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) ((random.nextDouble() * 2 - 1) * bound);
        }
        return values;
    }

    /**
     * One module's PEFT-default start as {@link #addAdapter(String, LoraConfig, Init, long)} draws it with the same
     * seed: {A [rank, in] Kaiming-uniform, B [out, rank] zero}.
     */
    public static float[][] peftDefaultStart(long seed, String moduleName, int rank, int in, int out) {
        SplittableRandom random = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + moduleName.hashCode());
        return new float[][] {uniformValues(random, rank * in, 1.0 / Math.sqrt(in)), new float[out * rank]};
    }

    public LoraConfig config(String adapterName) {
        LoraConfig config = configs.get(adapterName);
        if (config == null) {
            throw new IllegalArgumentException("no adapter named \"" + adapterName + "\": loaded are " + configs.keySet());
        }
        return config;
    }

    /** The names of the adapters loaded, in the order they were added. */
    public Set<String> adapterNames() {
        return Collections.unmodifiableSet(configs.keySet());
    }

    /** Module name to layer, for every layer holding an adapter. */
    public Map<String, LoraLinear> layers() {
        return Collections.unmodifiableMap(layers);
    }

    public void setActiveAdapter(String adapterName) {
        config(adapterName);
        layers.values().forEach(layer -> layer.setActive(adapterName));
        active = adapterName;
    }

    /** Adapters off: the model computes its base. */
    public void setAdaptersEnabled(boolean enabled) {
        layers.values().forEach(layer -> layer.setEnabled(enabled));
        this.enabled = enabled;
    }

    /** Dropout applies only in training. */
    public void setTraining(boolean training) {
        layers.values().forEach(layer -> layer.setTraining(training));
        this.training = training;
    }

    public boolean isTraining() {
        return training;
    }

    /**
     * A mode held for the length of a try-with-resources block: closing it puts back the mode that was set before,
     * also when the block throws, so no caller can leave the adapters in a mode it borrowed.
     */
    public interface Scope extends AutoCloseable {
        @Override
        void close();
    }

    /** Training mode (LoRA dropout on) for the scope. */
    public Scope training() {
        boolean before = training;
        setTraining(true);
        return () -> setTraining(before);
    }

    /** Evaluation mode (no dropout) for the scope. */
    public Scope evaluating() {
        boolean before = training;
        setTraining(false);
        return () -> setTraining(before);
    }

    /** Adapter {@code adapterName} active instead of the current one, for the scope. */
    public Scope withActive(String adapterName) {
        String before = active;
        setActiveAdapter(adapterName);
        return () -> setActiveAdapter(before);
    }

    /** Every adapter off (the model computes its base), for the scope. */
    public Scope withAdaptersDisabled() {
        boolean before = enabled;
        setAdaptersEnabled(false);
        return () -> setAdaptersEnabled(before);
    }

    /**
     * Trains {@code weight} in full as part of adapter {@code adapterName}, PEFT's modules_to_save: it is among the
     * adapter's {@link #parameters} (after the LoRA arrays) and saved with it. The model does not apply it; its owner
     * does (a reward model's score head reads the final hidden states).
     */
    public void addModuleToSave(String adapterName, String module, NDArray weight) {
        config(adapterName);
        weight.attach(manager);
        weight.setRequiresGradient(true);
        modulesToSave.computeIfAbsent(adapterName, n -> new LinkedHashMap<>()).put(module, weight);
    }

    /** Module name to weight, for the modules trained in full with adapter {@code adapterName} (often none). */
    public Map<String, NDArray> modulesToSave(String adapterName) {
        return Collections.unmodifiableMap(modulesToSave.getOrDefault(adapterName, Map.of()));
    }

    /**
     * The trainable arrays of one adapter, A then B (then DoRA's magnitude) per module, then each module trained in
     * full.
     */
    public List<NDArray> parameters(String adapterName) {
        config(adapterName);
        List<NDArray> parameters = new ArrayList<>();
        layers.values().forEach(layer -> {
            LoraLinear.Adapter adapter = layer.adapter(adapterName);
            if (adapter != null) {
                parameters.add(adapter.a());
                parameters.add(adapter.b());
                if (adapter.dora()) {
                    parameters.add(adapter.magnitude());
                }
            }
        });
        parameters.addAll(modulesToSave(adapterName).values());
        return parameters;
    }

    /**
     * module.lora_A / module.lora_B (/ module.lora_magnitude_vector) (then each module trained in full) for each array
     * of {@link #parameters}.
     */
    public List<String> parameterNames(String adapterName) {
        config(adapterName);
        List<String> names = new ArrayList<>();
        layers.forEach((module, layer) -> {
            LoraLinear.Adapter adapter = layer.adapter(adapterName);
            if (adapter != null) {
                names.add(module + ".lora_A");
                names.add(module + ".lora_B");
                if (adapter.dora()) {
                    names.add(module + ".lora_magnitude_vector");
                }
            }
        });
        names.addAll(modulesToSave(adapterName).keySet());
        return names;
    }
}
