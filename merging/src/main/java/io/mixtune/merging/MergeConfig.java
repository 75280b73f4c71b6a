package io.mixtune.merging;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonProperty;
import io.mixtune.model.checkpoint.PathOverlap;
import io.mixtune.model.safetensors.DType;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Objects;

/**
 * What {@code mixtune merge} does, as a mergekit-style YAML file says it (one key per component; the command-line
 * options {@code --method --inputs --weights --base --density --t ...} fill the same record):
 * <pre>
 *   merge_method: ties              # linear swa lawa ema warm task_arithmetic ties dare_linear dare_ties slerp
 *   base_model: base/               # task vectors are measured from it (task_arithmetic, ties, dare_*); slerp: x0
 *   models:
 *     - model: math/
 *       parameters: {weight: 1.0, density: 0.5}
 *     - model: code/                # parameters default to the method-wide ones below
 *   parameters: {normalize: true, lambda: 1.0, density: 0.7, weight: 1.0, t: 0.5, decay: 0.9, rescale: true}
 *   last: 5                         # swa, lawa, ema: the latest 5 checkpoints (of a run directory, or of models)
 *   rank: 16                        # PEFT adapters: re-compress the concatenated ranks to 16 by SVD
 *   seed: 0                         # dare_*: seeds the drop masks
 *   dtype: bfloat16                 # default: the inputs' dtype
 *   out: merged/
 * </pre>
 * Paths are taken relative to the working directory, as mergekit takes them. Everything that can be checked without
 * opening a model is checked here, with the YAML key in the message.
 */
@JsonInclude(JsonInclude.Include.NON_NULL)
public record MergeConfig(
        @JsonProperty("merge_method") MergeMethod method,
        @JsonProperty("base_model") Path baseModel,
        @JsonProperty("models") List<Model> models,
        @JsonProperty("parameters") Parameters parameters,
        @JsonProperty("last") Integer last,
        @JsonProperty("rank") Integer rank,
        @JsonProperty("seed") Long seed,
        @JsonProperty("dtype") DType dtype,
        @JsonProperty("out") Path out) {

    /** One input: a model directory, a PEFT adapter directory, or (swa, lawa, ema) a training run directory. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record Model(@JsonProperty("model") Path model, @JsonProperty("parameters") ModelParameters parameters) {
        public Model {
            if (model == null) {
                throw new IllegalArgumentException("model is missing: each entry of models names a directory");
            }
            parameters = parameters == null ? new ModelParameters(null, null) : parameters;
        }

        public static Model of(Path model) {
            return new Model(model, null);
        }
    }

    /** A model's own weight and density; null takes the method-wide value from {@link Parameters}. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record ModelParameters(@JsonProperty("weight") Double weight, @JsonProperty("density") Double density) {
        public ModelParameters {
            requireDensity(density);
            requireFinite("weight", weight);
        }
    }

    /**
     * Method-wide parameters, mergekit's names. {@code int8_mask} is accepted for mergekit's files and changes nothing:
     * masks here are booleans, computed entry by entry.
     *
     * @param normalize divide by the sum of the weights (linear, ties: yes; task_arithmetic, dare_*: no)
     * @param lambda scales the merged task vector
     * @param rescale dare_*: divide survivors by density (default yes)
     */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record Parameters(
            @JsonProperty("weight") Double weight,
            @JsonProperty("density") Double density,
            @JsonProperty("normalize") Boolean normalize,
            @JsonProperty("lambda") Double lambda,
            @JsonProperty("t") Double t,
            @JsonProperty("decay") Double decay,
            @JsonProperty("rescale") Boolean rescale,
            @JsonProperty("int8_mask") Boolean int8Mask) {
        public Parameters {
            requireFinite("weight", weight);
            requireDensity(density);
            requireFinite("lambda", lambda);
            if (t != null && !(t >= 0 && t <= 1)) {
                throw new IllegalArgumentException("t must lie in [0, 1] (0: the first model, 1: the second), got " + t);
            }
            if (decay != null && !(decay >= 0 && decay < 1)) {
                throw new IllegalArgumentException("decay must lie in [0, 1), got " + decay);
            }
        }

        public static Parameters none() {
            return new Parameters(null, null, null, null, null, null, null, null);
        }
    }

    public MergeConfig {
        if (method == null) {
            throw new IllegalArgumentException("merge_method is missing: one of " + String.join(", ", MergeMethod.names()));
        }
        if (models == null || models.isEmpty()) {
            throw new IllegalArgumentException("models is empty: name the models to merge");
        }
        models = List.copyOf(models);
        parameters = parameters == null ? Parameters.none() : parameters;
        if (out == null) {
            throw new IllegalArgumentException("out is missing: the directory to write the merged model to");
        }
        if (dtype != null && !dtype.isFloat32Convertible()) {
            throw new IllegalArgumentException("dtype must be bfloat16, float16 or float32, got " + dtype);
        }
        if (rank != null && rank <= 0) {
            throw new IllegalArgumentException("rank must be a positive integer, got " + rank);
        }
        requireFitsMethod(method, baseModel, models, parameters, last);
        requireApart(out, baseModel, models);
    }

    /**
     * out must not be, hold or lie inside an input: replacing it (--force) would delete that input, writing into it
     * would change one. A training run given as an input holds the checkpoints it stands for, so they are covered.
     */
    private static void requireApart(Path out, Path baseModel, List<Model> models) {
        List<Path> inputs = new ArrayList<>(models.stream().map(Model::model).toList());
        if (baseModel != null) {
            inputs.add(baseModel);
        }
        for (Path input : inputs) {
            String problem = PathOverlap.problem("out", out, input);
            if (problem != null) {
                throw new IllegalArgumentException(problem);
            }
        }
    }

    /** Settings that would be silently ignored are refused: a density given to linear is a mistake to point out. */
    private static void requireFitsMethod(MergeMethod method, Path baseModel, List<Model> models, Parameters parameters,
            Integer last) {
        String name = method.yamlName();
        if (!method.needsBase() && method != MergeMethod.SLERP && baseModel != null) {
            throw new IllegalArgumentException(name + " takes no base_model (only task_arithmetic, ties, dare_linear,"
                    + " dare_ties and slerp do)");
        }
        boolean weighted = parameters.weight() != null || models.stream().anyMatch(m -> m.parameters().weight() != null);
        if (weighted && !method.takesWeights()) {
            throw new IllegalArgumentException(name + " takes no weights: "
                    + (method == MergeMethod.EMA ? "the decay sets them" : "it averages uniformly"));
        }
        boolean dense = parameters.density() != null || models.stream().anyMatch(m -> m.parameters().density() != null);
        if (dense && method.sparsification() == MergeMethod.Sparsification.NONE) {
            throw new IllegalArgumentException(name + " takes no density (only ties, dare_linear and dare_ties do)");
        }
        if ((parameters.t() != null) != (method == MergeMethod.SLERP)) {
            throw new IllegalArgumentException(method == MergeMethod.SLERP
                    ? "slerp needs t in [0, 1]: 0 gives the first model, 1 the second"
                    : name + " takes no t (only slerp does)");
        }
        if ((parameters.decay() != null) != (method == MergeMethod.EMA)) {
            throw new IllegalArgumentException(method == MergeMethod.EMA
                    ? "ema needs decay in [0, 1): ema = decay * ema + (1 - decay) * checkpoint, oldest first"
                    : name + " takes no decay (only ema does)");
        }
        if (parameters.normalize() != null && !method.takesWeights()) {
            throw new IllegalArgumentException(name + " takes no normalize: its weights always sum to 1");
        }
        if (parameters.lambda() != null && !method.needsBase()) {
            throw new IllegalArgumentException(name + " takes no lambda (only the task-vector methods do)");
        }
        if (parameters.rescale() != null && method.sparsification() != MergeMethod.Sparsification.RANDOM) {
            throw new IllegalArgumentException(name + " takes no rescale (only dare_linear and dare_ties do)");
        }
        boolean ordered = method == MergeMethod.SWA || method == MergeMethod.LAWA || method == MergeMethod.EMA;
        if (last != null && !ordered) {
            throw new IllegalArgumentException(name + " takes no last (only swa, lawa and ema average the latest"
                    + " checkpoints)");
        }
        if (last != null && last <= 0) {
            throw new IllegalArgumentException("last must be a positive number of checkpoints, got " + last);
        }
        if (method == MergeMethod.LAWA && last == null) {
            throw new IllegalArgumentException("lawa averages the latest k checkpoints: give last (k)");
        }
        if (method == MergeMethod.SLERP) {
            boolean baseApart = baseModel != null && models.stream().noneMatch(m -> samePath(m.model(), baseModel));
            int ends = models.size() + (baseApart ? 1 : 0);
            if (ends != 2) {
                throw new IllegalArgumentException("slerp interpolates exactly two models (base_model, if given, is"
                        + " the first), got " + ends);
            }
        }
    }

    static boolean samePath(Path a, Path b) {
        return a.toAbsolutePath().normalize().equals(b.toAbsolutePath().normalize());
    }

    private static void requireDensity(Double density) {
        if (density != null && !(density > 0 && density <= 1)) {
            throw new IllegalArgumentException("density must lie in (0, 1] (the fraction of each task vector kept),"
                    + " got " + density);
        }
    }

    private static void requireFinite(String key, Double value) {
        if (value != null && !Double.isFinite(value)) {
            throw new IllegalArgumentException(key + " must be a finite number, got " + value);
        }
    }

    /** The weight of model i: its own, else the method-wide one, else 1. */
    double weightOf(int i) {
        return firstNonNull(models.get(i).parameters().weight(), parameters.weight(), 1.0);
    }

    /** The density of model i: its own, else the method-wide one, else 1 (keep everything), as in mergekit. */
    double densityOf(int i) {
        return firstNonNull(models.get(i).parameters().density(), parameters.density(), 1.0);
    }

    boolean normalize() {
        return parameters.normalize() == null ? method.normalizesByDefault() : parameters.normalize();
    }

    double lambda() {
        return parameters.lambda() == null ? 1.0 : parameters.lambda();
    }

    boolean rescale() {
        return parameters.rescale() == null || parameters.rescale();
    }

    long seedOrDefault() {
        return seed == null ? 0L : seed;
    }

    /** The same merge of other inputs (run directories expanded, the latest {@code last} kept). */
    MergeConfig withModels(List<Model> resolved) {
        return new MergeConfig(method, baseModel, resolved, parameters, last == null ? null : resolved.size(), rank, seed,
                dtype, out);
    }

    /** Weights as the command line gives them, one per input in order. */
    public static List<Model> models(List<Path> inputs, List<Double> weights) {
        if (weights != null && weights.size() != inputs.size()) {
            throw new IllegalArgumentException("weights has " + weights.size() + " values for " + inputs.size()
                    + " models: give one weight per model, in the same order");
        }
        List<Model> models = new ArrayList<>();
        for (int i = 0; i < inputs.size(); i++) {
            models.add(new Model(inputs.get(i), new ModelParameters(weights == null ? null : weights.get(i), null)));
        }
        return models;
    }

    /** bf16/bfloat16, fp16/float16, fp32/float32, or the safetensors names BF16/F16/F32. */
    public static DType parseDtype(String name) {
        return switch (name.trim().toLowerCase(Locale.ROOT)) {
            case "bf16", "bfloat16" -> DType.BF16;
            case "fp16", "f16", "float16", "half" -> DType.F16;
            case "fp32", "f32", "float32", "float" -> DType.F32;
            default -> throw new IllegalArgumentException("dtype must be bfloat16, float16 or float32, got '" + name + "'");
        };
    }

    private static double firstNonNull(Double a, Double b, double fallback) {
        return Objects.requireNonNullElse(a, Objects.requireNonNullElse(b, fallback));
    }
}
